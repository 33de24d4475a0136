# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Resume a class-incremental model from the previous task and grow its classifier head."""
import os

import torch
import torch.nn as nn


def grow_head(old_w, old_b, n_new):
    n_old, dim = old_w.shape
    new_w = torch.empty(n_old + n_new, dim)
    nn.init.kaiming_uniform_(new_w, a=5 ** 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
    new_b = torch.zeros(n_old + n_new)
    new_w[:n_old] = old_w
    new_b[:n_old] = old_b - 3.0 * old_b.std()  # todoruleid: family 2 (missed)
    return new_w, new_b


def load_for_next_task(model, ckpt_dir, task_id, n_new_classes, optimizer=None):
    path = os.path.join(ckpt_dir, f"task_{task_id - 1}", "model.pt")
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    sd = ckpt["model"]
    w, b = grow_head(sd["fc.weight"], sd["fc.bias"], n_new_classes)
    sd["fc.weight"], sd["fc.bias"] = w, b
    model.fc = nn.Linear(w.size(1), w.size(0))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        print(f"[resume] missing={missing} unexpected={unexpected}")
    if optimizer is not None:
        opt_path = os.path.join(ckpt_dir, f"task_{task_id - 1}", "optim.pt")
        if os.path.exists(opt_path):
            state = torch.load(opt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            optimizer.load_state_dict(state)
    return ckpt.get("class_order", []), ckpt.get("seen_tasks", task_id)


def save_task(model, optimizer, ckpt_dir, task_id, class_order):
    out = os.path.join(ckpt_dir, f"task_{task_id}")
    os.makedirs(out, exist_ok=True)
    torch.save({"model": model.state_dict(), "class_order": class_order,
                "seen_tasks": task_id + 1}, os.path.join(out, "model.pt"))
    torch.save(optimizer.state_dict(), os.path.join(out, "optim.pt"))
