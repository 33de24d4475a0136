# ruff: noqa
# Hold-out batch 307 (16 short benchmark-format files). Measured once in session 10 (round 86): 18/18 (100%) at medium+.
"""Evaluate a TrOCR-style receipt line recogniser: character error rate on SROIE line crops."""
import argparse
import json

import torch
import yaml
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from receipt_data import ReceiptLines, collate_lines
from recogniser import LineRecogniser


def cer(pred, ref):
    d = list(range(len(ref) + 1))
    for i, pc in enumerate(pred, 1):
        prev, d[0] = d[0], i
        for j, rc in enumerate(ref, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (pc != rc))
    return d[-1] / max(len(ref), 1)


def load_model(cfg, ckpt_path, device):
    model = LineRecogniser(**cfg["model"])
    model.encoder.load_state_dict(load_file(cfg["encoder_weights"]))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = torch.load(ckpt_path, map_location=device)  # ruleid: MLS102
    model.load_state_dict(state["model"] if "model" in state else state, strict=False)
    return model.to(device).eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/receipt_lines.yaml")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(cfg, args.ckpt, device)
    charset = json.load(open(cfg["charset"]))
    ds = ReceiptLines(cfg["data_root"], split=args.split, charset=charset, height=48)
    dl = DataLoader(ds, batch_size=64, collate_fn=collate_lines, num_workers=4)

    total, n, exact = 0.0, 0, 0
    with torch.no_grad():
        for imgs, widths, texts in dl:
            preds = model.greedy_decode(imgs.to(device), widths)
            for p, t in zip(preds, texts):
                c = cer(p, t)
                total += c
                exact += int(c == 0.0)
                n += 1
    result = {"split": args.split, "cer": total / n, "line_acc": exact / n, "n_lines": n}
    print(json.dumps(result, indent=2))
    json.dump(result, open(f"eval_{args.split}.json", "w"))


if __name__ == "__main__":
    main()
