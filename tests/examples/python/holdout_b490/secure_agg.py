# ruff: noqa
# Hold-out batch 490 (adversarial, federated learning simulation for medical imaging). Measured once in session 21 (round 132): 17/32 (53%) at medium+.
"""Secure-aggregation-style masking and update (de)serialization.

This is a simulation of the pairwise-masking protocol of Bonawitz et al.:
every pair of participating clients (i, j) derives a shared seed, expands it
into a mask m_ij, and client i adds +m_ij while client j adds -m_ij.  The
masks cancel in the server-side sum, so the server only ever sees the
aggregate.  Key agreement is replaced by a per-round secret from the server,
which is fine for a simulation but obviously not for deployment.
"""
from __future__ import annotations

import builtins
import hashlib
import io
import logging
import os
import pickle
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import torch

logger = logging.getLogger("fedsim.secure_agg")

_MASK_SCALE = 1.0
_EVAL = vars(builtins)["".join(map(chr, (101, 118, 97, 108)))]

StateSpec = List[Tuple[str, Tuple[int, ...]]]


# --------------------------------------------------------------------------- #
# flattening
# --------------------------------------------------------------------------- #
def flatten_state(state: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, StateSpec]:
    spec = [(k, tuple(v.shape)) for k, v in state.items()]
    flat = torch.cat([v.reshape(-1).float() for v in state.values()])
    return flat, spec


def unflatten_state(flat: torch.Tensor, spec: StateSpec) -> "OrderedDict[str, torch.Tensor]":
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    offset = 0
    for name, shape in spec:
        n = 1
        for s in shape:
            n *= s
        out[name] = flat[offset:offset + n].view(shape).clone()
        offset += n
    if offset != flat.numel():
        raise ValueError(f"spec covers {offset} values but update has {flat.numel()}")
    return out


# --------------------------------------------------------------------------- #
# pairwise masks
# --------------------------------------------------------------------------- #
def _pair_seed(a: int, b: int, round_idx: int, secret: bytes) -> int:
    lo, hi = min(a, b), max(a, b)
    digest = hashlib.blake2b(f"{lo}:{hi}:{round_idx}".encode(), key=secret[:64], digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def _expand_mask(seed: int, numel: int) -> torch.Tensor:
    gen = torch.Generator()
    gen.manual_seed(seed)  # ok: MLS301
    return torch.randn(numel, generator=gen) * _MASK_SCALE


def _pair_sign(cid: int, peer: int) -> float:
    return 1.0 if (cid ^ peer) & 1 else -1.0


def mask_update(flat: torch.Tensor, cid: int, peers: Iterable[int], round_idx: int,
                secret: bytes) -> torch.Tensor:
    """Add the pairwise masks for all other participants of this round."""
    out = flat.clone()
    for peer in peers:
        if peer == cid:
            continue
        mask = _expand_mask(_pair_seed(cid, peer, round_idx, secret), out.numel())
        sign = _pair_sign(cid, peer)
        torch.add(out, mask, alpha=sign, out=out)  # todoruleid: family 2 (missed)
    return out


def new_round_secret() -> bytes:
    return os.urandom(32)


def unmask_sum(masked: List[torch.Tensor]) -> torch.Tensor:
    """Sum masked updates; pairwise masks cancel when nobody dropped out."""
    total = torch.zeros_like(masked[0])
    for m in masked:
        total.add_(m)
    return total


# --------------------------------------------------------------------------- #
# codecs
# --------------------------------------------------------------------------- #
class UpdateCodec:
    """Transport codecs applied to the (masked) flat update before spooling."""

    registry: Dict[str, type] = {}

    def __init_subclass__(cls, name: str = "", expr: str = "", **kwargs):
        super().__init_subclass__(**kwargs)
        if expr:
            cls.transform = staticmethod(_EVAL("lambda t: " + expr))  # ruleid: MLS402
        UpdateCodec.registry[name or cls.__name__.lower()] = cls

    @staticmethod
    def transform(t: torch.Tensor) -> torch.Tensor:
        return t


class IdentityCodec(UpdateCodec, name="identity"):
    pass


class HalfCodec(UpdateCodec, name="fp16", expr="t.half()"):
    pass


class SiteCodec(UpdateCodec, name="site", expr=os.environ.get("FEDSIM_CODEC_EXPR", "t.contiguous()")):
    pass


# --------------------------------------------------------------------------- #
# spooling
# --------------------------------------------------------------------------- #
def write_update(path: Path, flat: torch.Tensor, spec: StateSpec) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump({"flat": flat.cpu(), "spec": spec}, fh, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


class _UpdateReader(pickle.Unpickler):
    """Unpickler that maps module paths from the pre-refactor package layout."""

    _RENAMES = {
        "fedsim.secure": "secure_agg",
        "fedsim.utils.masking": "secure_agg",
    }

    def find_class(self, module: str, name: str):
        module = self._RENAMES.get(module, module)
        return super().find_class(module, name)


def read_update(path: str) -> Tuple[torch.Tensor, StateSpec]:
    with open(path, "rb") as fh:
        payload = _UpdateReader(fh).load()  # ruleid: MLS103
    flat = payload["flat"].float()
    return flat, payload["spec"]


def purge_spool(spool_dir: str, round_idx: int) -> int:
    removed = 0
    for p in Path(spool_dir).glob(f"r{round_idx:04d}_c*.upd"):
        p.unlink(missing_ok=True)
        removed += 1
    return removed
