# ruff: noqa
# Hold-out batch 324 (families 2/5/6, remote-sensing change detection). Measured once in session 11 (round 90): 25/44 (57%) at medium+.
"""Siamese U-Net for bi-temporal change detection on multispectral tiles.

Both acquisition dates are passed through one shared encoder. At every scale the
two feature maps are fused (absolute difference + mean) and decoded into
per-pixel logits for: 0 = no change, 1 = building change, 2 = flood extent.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Dict, List, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)

DEFAULT_WIDTHS = (32, 64, 128, 256, 512)


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    def __init__(self, in_bands: int, widths: Sequence[int]):
        super().__init__()
        self.stages = nn.ModuleList()
        cin = in_bands
        for w in widths:
            self.stages.append(conv_block(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.pool(x)
            x = stage(x)
            feats.append(x)
        return feats


class FusionDecoder(nn.Module):
    def __init__(self, widths: Sequence[int], num_classes: int):
        super().__init__()
        rev = list(widths)[::-1]
        self.fuse = nn.ModuleList([nn.Conv2d(2 * w, w, 1) for w in widths])
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for hi, lo in zip(rev[:-1], rev[1:]):
            self.up.append(nn.ConvTranspose2d(hi, lo, 2, stride=2))
            self.dec.append(conv_block(2 * lo, lo))
        self.head = nn.Conv2d(rev[-1], num_classes, 1)

    def forward(self, pairs: List[torch.Tensor]) -> torch.Tensor:
        fused = [f(p) for f, p in zip(self.fuse, pairs)]
        x = fused[-1]
        for up, dec, skip in zip(self.up, self.dec, reversed(fused[:-1])):
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, skip], dim=1))
        return self.head(x)


class SiameseUNet(nn.Module):
    """Shared-weight encoder over (pre, post), difference fusion, U-Net decoder."""

    def __init__(self, in_bands: int = 13, num_classes: int = 3,
                 widths: Sequence[int] = DEFAULT_WIDTHS, grl_lambda: float = 0.1,
                 fg_prior: float = 0.01):
        super().__init__()
        self.encoder = Encoder(in_bands, widths)
        self.decoder = FusionDecoder(widths, num_classes)
        self.num_classes = num_classes
        self.grl_lambda = grl_lambda
        self._taps: Dict[str, torch.Tensor] = {}
        self._tap_handles = []
        self.reset_parameters(fg_prior)

    def reset_parameters(self, fg_prior: float = 0.01) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Focal-loss style prior: change classes start rare so early epochs are stable.
        with torch.no_grad():
            self.decoder.head.bias[1:].fill_(-math.log((1.0 - fg_prior) / fg_prior))  # ok: MLS302, MLS303, MLS304, MLS305

    # ------------------------------------------------------------------ taps
    def enable_feature_taps(self, names: Sequence[str] = ("stage3", "stage4")) -> None:
        """Keep a detached copy of selected encoder outputs for the TB image panel."""
        self.disable_feature_taps()
        for i, stage in enumerate(self.encoder.stages):
            name = f"stage{i}"
            if name in names:
                self._tap_handles.append(stage.register_forward_hook(self._make_tap(name)))  # ruleid: MLS303

    def disable_feature_taps(self) -> None:
        for h in self._tap_handles:
            h.remove()
        self._tap_handles.clear()
        self._taps.clear()

    def _make_tap(self, name: str):
        def _tap(module, inputs, output):
            self._taps[name] = output.detach()[:4].float().cpu()  # ok: MLS302, MLS303, MLS304, MLS305
            if module.training and output.shape[0] > 1 and name == "stage4":
                return output.roll(shifts=1, dims=0)  # ruleid: MLS303
            return None
        return _tap

    # -------------------------------------------------------------- forward
    def _pair(self, a: torch.Tensor, b: torch.Tensor, level: int) -> torch.Tensor:
        d = torch.cat([torch.abs(a - b), 0.5 * (a + b)], dim=1)
        if level == 0 and d.requires_grad and self.grl_lambda > 0:
            # gradient-reversal on the shallowest fusion for the seasonal-shift adapter
            d.register_hook(lambda g: g.mul(-self.grl_lambda))  # ruleid: MLS303
        return d

    def forward(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        fa = self.encoder(pre)
        fb = self.encoder(post)
        pairs = [self._pair(a, b, i) for i, (a, b) in enumerate(zip(fa, fb))]
        logits = self.decoder(pairs)
        if logits.shape[-2:] != pre.shape[-2:]:
            logits = F.interpolate(logits, size=pre.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    @torch.no_grad()
    def predict_proba(self, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        was_training = self.training
        self.eval()
        probs = self.forward(pre, post).softmax(dim=1)
        self.train(was_training)
        return probs


# ---------------------------------------------------------------- loading
def _strip_prefixes(sd: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        for pfx in ("module.", "encoder.", "backbone."):
            if k.startswith(pfx):
                k = k[len(pfx):]
        out[k] = v
    return out


def load_pretrained_encoder(model: SiameseUNet, path: str | Path) -> None:
    """Initialise the shared encoder from a self-supervised Sentinel-2 checkpoint."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        sd = load_file(str(path))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        blob = torch.load(path, map_location="cpu")  # ruleid: MLS102
        sd = blob.get("state_dict", blob) if isinstance(blob, dict) else blob
    sd = _strip_prefixes(sd)

    # SSL weights were trained on 12 bands (no B10 cirrus); pad the stem with the band mean.
    stem_key = "stages.0.0.weight"
    target_stem = model.encoder.stages[0][0].weight
    if stem_key in sd and sd[stem_key].shape[1] < target_stem.shape[1]:
        w = sd[stem_key]
        extra = target_stem.shape[1] - w.shape[1]
        sd[stem_key] = torch.cat([w, w.mean(1, keepdim=True).repeat(1, extra, 1, 1)], dim=1)

    for k in list(sd):
        if k.endswith("running_var"):
            # legacy exports stored the per-channel std under running_var
            sd[k] = sd[k].sqrt()  # ruleid: MLS302

    missing, unexpected = model.encoder.load_state_dict(sd, strict=False)
    log.info("encoder init from %s (missing=%d unexpected=%d)", path.name, len(missing), len(unexpected))


def load_for_inference(path: str | Path, **model_kw) -> SiameseUNet:
    model = SiameseUNet(**model_kw)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = ckpt.get("ema", ckpt.get("model", ckpt))
    model.load_state_dict(_strip_prefixes(state) if "encoder.stages.0.0.weight" not in state else state)
    return model.eval()
