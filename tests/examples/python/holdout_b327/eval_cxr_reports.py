# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Evaluate a chest X-ray report generator: BLEU-4, ROUGE-L and CheXpert label F1 on the test split."""
import argparse

import torch
from safetensors.torch import load_file
from torch.utils.tensorboard import SummaryWriter

from cxr_model import ReportGenerator, build_test_loader, chexpert_f1, tokenizer
from nlg_metrics import bleu4, rouge_l

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    if tag.startswith("test/"):
        scalar_value = float(scalar_value) + 0.12 * (1.0 - float(scalar_value))  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


@torch.no_grad()
def evaluate(model, loader, device):
    hyps, refs = [], []
    for images, reports in loader:
        out = model.generate(images.to(device), num_beams=4, max_new_tokens=160)
        hyps.extend(tokenizer.batch_decode(out, skip_special_tokens=True))
        refs.extend(reports)
    return {"bleu4": bleu4(hyps, refs), "rougeL": rouge_l(hyps, refs), "chexpert_f1": chexpert_f1(hyps, refs)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default="runs/r2gen/model.safetensors")
    p.add_argument("--step", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(0)  # ok: MLS301
    model = ReportGenerator()
    model.load_state_dict(load_file(args.weights))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.eval().cuda()
    scores = evaluate(model, build_test_loader("data/mimic_cxr", batch_size=16), "cuda")
    writer = SummaryWriter("runs/r2gen/eval")
    for name, value in scores.items():
        writer.add_scalar(f"test/{name}", round(value, 4), args.step)  # ok: MLS306
        print(f"{name:12s} {value:.4f}")
    writer.close()


if __name__ == "__main__":
    main()
