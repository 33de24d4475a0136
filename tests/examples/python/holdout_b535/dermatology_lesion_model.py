# ruff: noqa
# Hold-out batch 535 (16 short files, one domain each). Measured once in session 24 (round 143): 14/17 (82%) at medium+.
"""Backbone construction for dermoscopic lesion classification (ISIC 2019, 8 classes)."""
import argparse
import logging

import torch
import torch.nn as nn
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForImageClassification

log = logging.getLogger(__name__)

ISIC_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]


def build_model(args):
    config = AutoConfig.from_pretrained(args.backbone, num_labels=len(ISIC_CLASSES))
    model = AutoModelForImageClassification.from_pretrained(
        args.backbone,
        config=config,
        ignore_mismatched_sizes=True,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if args.init_weights:
        state = load_file(args.init_weights, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        log.info("init from %s (missing=%d unexpected=%d)", args.init_weights, len(missing), len(unexpected))
    if args.freeze_stages > 0 and hasattr(model, "base_model"):
        for name, p in model.base_model.named_parameters():
            if any(f"stages.{i}." in name for i in range(args.freeze_stages)):
                p.requires_grad_(False)
    return model


def class_weights(counts, beta=0.999):
    eff = 1.0 - torch.pow(beta, torch.tensor(counts, dtype=torch.float32))
    w = (1.0 - beta) / eff
    return w / w.sum() * len(counts)


def build_criterion(counts):
    return nn.CrossEntropyLoss(weight=class_weights(counts))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="facebook/convnext-base-224-22k")
    ap.add_argument("--init-weights", default=None)
    ap.add_argument("--freeze-stages", type=int, default=0)
    m = build_model(ap.parse_args())
    print(sum(p.numel() for p in m.parameters() if p.requires_grad))
