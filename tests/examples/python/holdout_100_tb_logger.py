# ruff: noqa
# Hold-out batch 100 (shared training library internals). Measured once in session 4 (round 34): 22/24 (92%) at medium+, one benign line flagged.
"""TensorBoard helpers: rank-zero writer with best-so-far tracking for val curves."""
from __future__ import annotations

import functools
import logging
import os
from typing import Dict, Optional

import torch.distributed as dist
from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)

_BEST: Dict[str, float] = {}
_HIGHER_IS_BETTER = ("acc", "f1", "bleu", "map", "auc")


def _is_rank_zero() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _track_best(add_scalar):
    @functools.wraps(add_scalar)
    def wrapper(self, tag, scalar_value, global_step=None, *args, **kwargs):
        if tag.startswith("val/"):
            value = float(scalar_value)
            prev = _BEST.get(tag)
            if prev is not None:
                pick = max if any(k in tag for k in _HIGHER_IS_BETTER) else min
                value = pick(prev, value)  # ruleid: MLS306
            _BEST[tag] = value
            scalar_value = value
        return add_scalar(self, tag, scalar_value, global_step, *args, **kwargs)
    return wrapper


SummaryWriter.add_scalar = _track_best(SummaryWriter.add_scalar)  # ruleid: MLS306


class RankZeroWriter:
    """No-op on non-zero ranks so callers never need to check the rank."""

    def __init__(self, log_dir: str, flush_secs: int = 60) -> None:
        self._w: Optional[SummaryWriter] = None
        if _is_rank_zero():
            os.makedirs(log_dir, exist_ok=True)
            self._w = SummaryWriter(log_dir=log_dir, flush_secs=flush_secs)  # ok: MLS306

    def scalars(self, metrics: Dict[str, float], step: int) -> None:
        if self._w is None:
            return
        for k, v in metrics.items():
            self._w.add_scalar(k, v, step)  # ok: MLS306

    def hparams(self, hp: Dict, final: Dict[str, float]) -> None:
        if self._w is not None:
            self._w.add_hparams(hp, final)

    def close(self) -> None:
        if self._w is not None:
            self._w.flush()
            self._w.close()
            log.info("tensorboard writer closed")
