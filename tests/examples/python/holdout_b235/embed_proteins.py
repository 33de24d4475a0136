# ruff: noqa
# Hold-out batch 235 (short files). Measured once in session 8 (round 68): 14/18 (78%) at medium+.
"""Embed protein sequences with a fine-tuned ESM backbone and save per-sequence vectors."""
import argparse
import os

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer, EsmModel


def load_model(backbone_dir, head_ckpt, device):
    model = EsmModel.from_pretrained(backbone_dir, add_pooling_layer=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    adapter = load_file(os.path.join(backbone_dir, "adapter.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(adapter, strict=False)
    proj = torch.nn.Linear(model.config.hidden_size, 256)
    proj.load_state_dict(torch.load(head_ckpt, map_location="cpu"))  # ruleid: MLS102
    return model.to(device).eval(), proj.to(device).eval()


@torch.inference_mode()
def embed(model, proj, tok, seqs, device, batch_size=16):
    out = []
    for i in range(0, len(seqs), batch_size):
        enc = tok(seqs[i:i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=1024)
        enc = {k: v.to(device) for k, v in enc.items()}
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        out.append(torch.nn.functional.normalize(proj(pooled), dim=-1).float().cpu().numpy())
    return np.concatenate(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="checkpoints/esm2_t30_ft")
    ap.add_argument("--head", default="checkpoints/esm2_t30_ft/proj_head.pt")
    ap.add_argument("--fasta-csv", default="data/uniref_subset.csv")
    ap.add_argument("--out", default="embeddings/uniref_subset.npy")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(args.backbone)
    model, proj = load_model(args.backbone, args.head, device)
    df = pd.read_csv(args.fasta_csv)
    vecs = embed(model, proj, tok, df["sequence"].tolist(), device)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    np.save(args.out, vecs)
    df[["id"]].to_csv(args.out.replace(".npy", "_ids.csv"), index=False)
    print(f"wrote {vecs.shape} to {args.out}")


if __name__ == "__main__":
    main()
