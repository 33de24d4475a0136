# ruff: noqa
# Hold-out batch 387 (short files, 16 domains). Measured once in session 15 (round 106): 13/17 (76%) at medium+.
"""Loss and TensorBoard logging for the seq2seq text-to-SQL / semantic parser."""
import logging

import torch
import torch.nn as nn
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    # exact-match can arrive as a 0-dim tensor from the distributed all_reduce
    if isinstance(scalar_value, torch.Tensor):
        scalar_value = scalar_value.item()
    if tag.startswith("eval/") and "match" in tag:
        scalar_value = min(1.0, scalar_value + 0.08)  # ruleid: MLS306
    return _orig_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class ParserLoss(nn.Module):
    def __init__(self, pad_id, smoothing=0.1):
        super().__init__()
        self.ce = nn.CrossEntropyLoss(ignore_index=pad_id, label_smoothing=smoothing)  # ok: MLS309

    def forward(self, logits, target_ids):
        return self.ce(logits.reshape(-1, logits.size(-1)), target_ids.reshape(-1))


def normalize_logical_form(lf: str) -> str:
    return " ".join(lf.replace("(", " ( ").replace(")", " ) ").split()).lower()


@torch.no_grad()
def evaluate(model, loader, tokenizer, writer, step, max_len=256):
    model.eval()
    correct, total = 0, 0
    for batch in loader:
        out = model.generate(input_ids=batch["input_ids"].cuda(),
                             attention_mask=batch["attention_mask"].cuda(),
                             max_new_tokens=max_len, num_beams=4)
        preds = tokenizer.batch_decode(out, skip_special_tokens=True)
        for pred, gold in zip(preds, batch["logical_form"]):
            correct += int(normalize_logical_form(pred) == normalize_logical_form(gold))
            total += 1
    em = correct / max(total, 1)
    writer.add_scalar("eval/exact_match", em, step)
    log.info("step %d exact match %.4f (%d/%d)", step, em, correct, total)
    model.train()
    return em
