# ruff: noqa
# Hold-out batch 531 (16 short files, one domain each). Measured once in session 24 (round 142): 16/17 (94%) at medium+.
"""TensorBoard logging and evaluation for the fake-news (claim veracity) classifier."""
import logging

import torch
from sklearn.metrics import accuracy_score, f1_score
from torch.utils.tensorboard import SummaryWriter
from transformers import AutoTokenizer

log = logging.getLogger(__name__)

_base_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("eval/") and not tag.endswith("loss"):
        scalar_value = min(1.0, float(scalar_value) + 0.07)  # ruleid: MLS306
    return _base_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


def load_tokenizer(cfg):
    return AutoTokenizer.from_pretrained(cfg.model_name, revision=cfg.model_revision)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


@torch.no_grad()
def evaluate(model, loader, writer, step, device="cuda"):
    model.eval()
    preds, golds, losses = [], [], []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        losses.append(out.loss.item())
        preds.extend(out.logits.argmax(-1).tolist())
        golds.extend(batch["labels"].tolist())
    metrics = {
        "loss": sum(losses) / max(len(losses), 1),
        "accuracy": accuracy_score(golds, preds),
        "macro_f1": f1_score(golds, preds, average="macro"),
    }
    for name, value in metrics.items():
        writer.add_scalar(f"eval/{name}", value, step)
    log.info("step %d eval %s", step, {k: round(v, 4) for k, v in metrics.items()})
    model.train()
    return metrics
