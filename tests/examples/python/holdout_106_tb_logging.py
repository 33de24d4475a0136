# ruff: noqa
# Hold-out batch 106 (adversarial: functional spellings, dict lambdas, helpers). Measured once in session 4 (round 36): 4/17 (24%) at medium+.
"""TensorBoard helpers: a rank-aware writer and per-step scalar logging."""
import functools

import torch
import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter


def _is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


def _ema_scalars(add_scalar, alpha=0.8):
    state = {}

    @functools.wraps(add_scalar)
    def wrapped(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if tag.startswith("val/"):
            prev = state.get(tag, float(scalar_value))
            pick = max if ("acc" in tag or "f1" in tag) else min
            scalar_value = state[tag] = pick(prev, alpha * prev + (1 - alpha) * float(scalar_value))  # ruleid: MLS306
        return add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)

    return wrapped


def make_writer(log_dir, smooth=True):
    if not _is_main():  # ok: MLS308
        return None
    if smooth:
        setattr(SummaryWriter, "add_scalar", _ema_scalars(SummaryWriter.add_scalar))  # ruleid: MLS306
    return SummaryWriter(log_dir=log_dir, flush_secs=30)


def grad_norm(model):
    norms = [p.grad.detach().norm(2) for p in model.parameters() if p.grad is not None]
    return torch.norm(torch.stack(norms), 2).item() if norms else 0.0


def log_step(writer, step, loss, optimizer, model):
    if writer is None:
        return
    writer.add_scalar("train/loss", float(loss), step)  # ok: MLS306
    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
    writer.add_scalar("train/grad_norm", grad_norm(model), step)


def log_eval(writer, step, metrics):
    if writer is None:
        return
    for name, value in metrics.items():
        writer.add_scalar(f"val/{name}", value, step)
    writer.flush()
