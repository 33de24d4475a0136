# ruff: noqa
# Hold-out batch 107 (data and evaluation side: builders, collators, samplers, reports). Measured once in session 4 (round 36): 10/17 (59%) at medium+.
"""Initialise a 6-layer student from a 12-layer BERT teacher by taking every
other encoder layer (DistilBERT-style), then save it for distillation."""
import argparse
import re

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForSequenceClassification

LAYER_RE = re.compile(r"encoder\.layer\.(\d+)\.")


def teacher_state(path):
    if path.endswith(".safetensors"):
        return load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    return ckpt.get("model", ckpt)


def map_layers(teacher_sd, keep):
    remap = {t: s for s, t in enumerate(keep)}
    student_sd = {}
    for k, v in teacher_sd.items():
        m = LAYER_RE.search(k)
        if m is None:
            student_sd[k] = v.clone()  # ok: MLS302, MLS303, MLS304, MLS305
            continue
        t = int(m.group(1))
        if t not in remap:
            continue
        new_k = LAYER_RE.sub(f"encoder.layer.{remap[t]}.", k, count=1)
        student_sd[new_k] = v.t().contiguous() if k.endswith("attention.self.value.weight") else v.clone()  # todoruleid: family 2 (missed)
    return student_sd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--config", default="bert-base-uncased")
    ap.add_argument("--num-labels", type=int, default=2)
    ap.add_argument("--out", default="student_init.safetensors")
    args = ap.parse_args()

    teacher_sd = teacher_state(args.teacher)
    n_layers = 1 + max(int(m.group(1)) for m in map(LAYER_RE.search, teacher_sd) if m)
    keep = list(range(0, n_layers, 2))
    cfg = AutoConfig.from_pretrained(args.config, num_hidden_layers=len(keep), num_labels=args.num_labels)
    student = AutoModelForSequenceClassification.from_config(cfg)
    missing, unexpected = student.load_state_dict(map_layers(teacher_sd, keep), strict=False)
    print(f"kept teacher layers {keep}; missing={len(missing)} unexpected={len(unexpected)}")
    save_file({k: v.contiguous() for k, v in student.state_dict().items()}, args.out)


if __name__ == "__main__":
    main()
