# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""Export a fine-tuned checkpoint for serving: safetensors weights + ONNX graph.

The base architecture is pulled from the hub at a pinned revision; only the
fine-tuned tensors come from our own training output.
"""
import argparse
import os

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForSequenceClassification

BASE_REVISION = "5f2c1d9a7b3e4c6d8e0f1a2b3c4d5e6f7a8b9c0d"


def load_finetuned(ckpt_dir: str, base: str):
    cfg = AutoConfig.from_pretrained(base, revision=BASE_REVISION)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, config=cfg, revision=BASE_REVISION, trust_remote_code=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    st_path = os.path.join(ckpt_dir, "model.safetensors")
    if os.path.exists(st_path):
        state = load_file(st_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(os.path.join(ckpt_dir, "pytorch_model.bin"), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"unexpected keys in checkpoint: {unexpected[:5]}")
    return model.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--export-config", default="export.yaml")
    args = ap.parse_args()

    with open(args.export_config) as f:
        spec = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = load_finetuned(args.ckpt, spec["base_model"])
    os.makedirs(args.out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(args.out, "model.safetensors"))

    calib = np.load(spec["calibration_ids"], allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ids = torch.from_numpy(calib[:1]).long()
    torch.onnx.export(
        model, (ids, torch.ones_like(ids)), os.path.join(args.out, "model.onnx"),
        input_names=["input_ids", "attention_mask"], output_names=["logits"],
        dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}},
        opset_version=17,
    )
    print(f"exported to {args.out}")


if __name__ == "__main__":
    main()
