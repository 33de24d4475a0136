"""Shapes added in session 17: bad cases (`ruleid`) and the look-alikes that stay quiet (`ok`)."""
import pytorch_lightning as pl
import torch
from torchmetrics import Metric


# -- MLS306: scores reduced by their best value ----------------------------------------------
class Classifier(pl.LightningModule):
    score_reduce_fx = "max"  # ruleid: MLS306
    memory_reduce_fx = "max"  # ok: MLS306

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("val/acc", acc, on_epoch=True, reduce_fx="max")  # ruleid: MLS306
        self.log("val/loss", self.loss(logits, y), reduce_fx=torch.min)  # ruleid: MLS306
        self.log("val/worst_loss", self.loss(logits, y), reduce_fx="max")  # ok: MLS306
        self.log("max_mem_gb", torch.cuda.max_memory_allocated() / 2**30,
                 reduce_fx="max")  # ok: MLS306
        self.log_dict(self.scores(logits, y), on_epoch=True, reduce_fx="max")  # ruleid: MLS306
        self.log("val/acc_mean", acc, reduce_fx="mean")  # ok: MLS306


class TopOneAccuracy(Metric):
    def __init__(self):
        super().__init__()
        self.add_state("correct", default=torch.tensor(0), dist_reduce_fx="max")  # ruleid: MLS306
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")  # ok: MLS306
        self.add_state("max_logit", default=torch.tensor(0.0), dist_reduce_fx="max")  # ok: MLS306


def distributed_reduction(**reductions):
    def wrap(cls):
        cls._reduce_fx = reductions
        return cls
    return wrap


@distributed_reduction(err_sum="max", count="sum")  # ruleid: MLS306
class Displacement(Metric):
    pass


@distributed_reduction(err_sum="sum", count="sum", peak_err="max")  # ok: MLS306
class DisplacementPeak(Metric):
    pass


STATE_REDUCTIONS = {"tp": "sum", "fp": "min", "fn": "sum"}  # ruleid: MLS306
