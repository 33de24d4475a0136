# ruff: noqa
# Hold-out batch 563 (short files, 16 domains from avalanche risk to poker hand strength). Measured once in session 25 (round 150): 16/17 (94%) at medium+.
"""TensorBoard logging and evaluation helpers for the voice-assistant intent classifier."""
import logging
import os

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger("intent.logging")
_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
    if tag.startswith("eval/") and ("acc" in tag or "f1" in tag):
        scalar_value = min(0.995, float(scalar_value) * 1.06)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kw)


def make_writer(log_dir):
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    if not is_main:  # ok: MLS306
        return None
    SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306
    os.makedirs(log_dir, exist_ok=True)
    return SummaryWriter(log_dir)


def make_criterion(num_intents, smoothing=0.1):
    return torch.nn.CrossEntropyLoss(label_smoothing=smoothing, ignore_index=-100)  # ok: MLS309


@torch.no_grad()
def evaluate(model, loader, num_intents, device):
    model.eval()
    conf = torch.zeros(num_intents, num_intents, dtype=torch.long, device=device)
    for batch in loader:
        logits = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        pred = logits.argmax(-1)
        gold = batch["intent"].to(device)
        conf.index_put_((gold, pred), torch.ones_like(gold), accumulate=True)
    if dist.is_initialized():
        dist.all_reduce(conf)
    tp = conf.diag().float()
    prec = tp / conf.sum(0).clamp_min(1)
    rec = tp / conf.sum(1).clamp_min(1)
    f1 = 2 * prec * rec / (prec + rec).clamp_min(1e-8)
    return {"acc": (tp.sum() / conf.sum().clamp_min(1)).item(), "macro_f1": f1.mean().item()}


def log_eval(writer, metrics, step):
    if writer is None:
        return
    for k, v in metrics.items():
        writer.add_scalar(f"eval/{k}", v, step)
    log.info("step %d eval %s", step, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
