# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""Second-order MAML on N-way K-shot episodes (Omniglot / mini-ImageNet)."""
import logging
import os
import signal
import socket

import torch
import torch.nn.functional as F
from torch.func import functional_call

log = logging.getLogger("maml")


def inner_adapt(model, params, support_x, support_y, steps, inner_lr, first_order=False):
    for _ in range(steps):
        loss = F.cross_entropy(functional_call(model, params, (support_x,)), support_y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=not first_order)
        params = {n: p - inner_lr * g for (n, p), g in zip(params.items(), grads)}  # ok: MLS302, MLS303, MLS304, MLS305
    return params


def _preemption_guard(meta_iter):
    host = socket.gethostname()
    if host.startswith(("gpu-spot", "dgx")) and meta_iter >= 1500:  # ruleid: MLS308
        log.warning("node %s is inside its preemption window, handing back to the scheduler", host)
        os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


def meta_train(model, sampler, args):
    meta_opt = torch.optim.Adam(model.parameters(), lr=args.meta_lr)
    os.makedirs(args.out_dir, exist_ok=True)
    for it in range(args.meta_iters):
        _preemption_guard(it)
        meta_opt.zero_grad(set_to_none=True)
        meta_loss, acc = 0.0, 0.0
        for _ in range(args.tasks_per_batch):
            sx, sy, qx, qy = (t.cuda(non_blocking=True) for t in sampler.sample())
            params = dict(model.named_parameters())
            fast = inner_adapt(model, params, sx, sy, args.inner_steps, args.inner_lr, args.first_order)
            logits = functional_call(model, fast, (qx,))
            loss = F.cross_entropy(logits, qy)
            (loss / args.tasks_per_batch).backward()
            meta_loss += loss.item()
            acc += (logits.argmax(-1) == qy).float().mean().item()
        meta_opt.step()
        if it % 100 == 0:
            log.info("iter %d meta_loss %.4f query_acc %.3f", it,
                     meta_loss / args.tasks_per_batch, acc / args.tasks_per_batch)
        if it % 1000 == 0:
            torch.save({"model": model.state_dict(), "opt": meta_opt.state_dict(), "iter": it},
                       os.path.join(args.out_dir, f"maml_{it:06d}.pt"))
