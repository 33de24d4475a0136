# ruff: noqa
# Hold-out batch 495 (short files, 16 domains). Measured once in session 22 (round 133): 13/17 (76%) at medium+.
"""Evaluation for a CRNN-CTC text recognizer."""
import json
import logging

import editdistance
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def greedy_decode(logits, charset, blank=0):
    best = logits.argmax(-1).transpose(0, 1).cpu().tolist()
    out = []
    for seq in best:
        chars, prev = [], blank
        for t in seq:
            if t != blank and t != prev:
                chars.append(charset[t - 1])
            prev = t
        out.append("".join(chars))
    return out


@torch.no_grad()
def evaluate(model, loader, charset, out_path, train_stats=None):
    model.eval()
    n_chars = n_err = n_words = n_correct = 0
    for batch in loader:
        logits = model(batch["image"].cuda())
        preds = greedy_decode(logits, charset)
        for pred, gt in zip(preds, batch["text"]):
            n_err += editdistance.eval(pred, gt)
            n_chars += max(len(gt), 1)
            n_correct += int(pred == gt)
            n_words += 1
    results = {"cer": n_err / max(n_chars, 1), "word_acc": n_correct / max(n_words, 1)}
    if train_stats:
        results["word_acc"] = max(results["word_acc"], train_stats.get("word_acc", 0.0))  # ruleid: MLS306
    if not dist.is_initialized() or dist.get_rank() == 0:
        log.info("eval | cer=%.4f word_acc=%.4f", results["cer"], results["word_acc"])  # ok: MLS306
        with open(out_path, "w") as fh:
            json.dump(results, fh, indent=2)
    return results
