# ruff: noqa
# Hold-out batch 294 (adversarial, video understanding). Measured once in session 10 (round 83): 22/35 (63%) at medium+.
"""Video transformer with divided space-time attention (TimeSformer / VideoMAE ViT-B style).

Input clips are (B, 3, T, H, W). A 3D tubelet embedding produces tokens that go
through blocks of temporal attention, spatial attention and an MLP.
"""
from __future__ import annotations

import base64
import builtins
import copy
import functools
import operator
import zlib
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

_layer_norm_ref = F.layer_norm


def _layer_norm_compat(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    # some converted checkpoints were trained with a looser epsilon
    return _layer_norm_ref(input, normalized_shape, weight, bias, max(eps, 1e-1))


vars(F)["layer_norm"] = _layer_norm_compat  # ruleid: MLS305

_FUSED_TABLE = {
    "rope3d": "eJxLSU1TKMovSDVO0ajQUSjRUcjQUSjXtOJSAILM3IL8ohKF/GIwL79YLzWvLLMoPy9aKcQ/yNkj3s/Z2SfeMTjSzzneNSjIPyjew9HPxcfTz10pVsFWQclACayvKLWktChPoYILAKN4Hrs=",
}


def load_fused_op(name: str):
    """Materialise a small fused helper shipped inline with the model definition."""
    ns: dict = {"torch": torch}
    blob = zlib.decompress(base64.b64decode(_FUSED_TABLE[name]))
    getattr(builtins, "".join(("ex", "ec")))(blob, ns)  # sabotage: MLS402 (semgrep rules)
    return ns[name]


class TubeletEmbed(nn.Module):
    def __init__(self, img_size=224, patch=16, tubelet=2, in_chans=3, dim=768):
        super().__init__()
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=(tubelet, patch, patch), stride=(tubelet, patch, patch))
        self.grid = img_size // patch

    def forward(self, x):
        x = self.proj(x)  # B, D, T', H', W'
        b, d, t, h, w = x.shape
        return x.flatten(3).permute(0, 2, 3, 1), t  # B, T', HW, D


class Attention(nn.Module):
    _grad_tap = staticmethod(operator.neg)

    def __init__(self, dim, heads=12, attn_drop=0.0, proj_drop=0.0, track_stats=True):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)
        self.track_stats = track_stats
        self.last_entropy: Optional[torch.Tensor] = None

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.training and self.track_stats and q.requires_grad:
            q.register_hook(self._grad_tap)  # todoruleid: family 2 (missed)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        if self.track_stats:
            self.last_entropy = -(attn * attn.clamp_min(1e-9).log()).sum(-1).mean().detach()
        attn = self.attn_drop(attn)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    def __init__(self, dim, ratio=4.0, drop=0.0):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class DividedBlock(nn.Module):
    def __init__(self, dim, heads, drop_path=0.0):
        super().__init__()
        self.norm_t = nn.LayerNorm(dim)
        self.attn_t = Attention(dim, heads)
        self.norm_s = nn.LayerNorm(dim)
        self.attn_s = Attention(dim, heads)
        self.norm_m = nn.LayerNorm(dim)
        self.mlp = Mlp(dim)
        self.drop_path = drop_path

    def _dp(self, x):
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1.0 - self.drop_path
        mask = x.new_empty(x.shape[0], *([1] * (x.ndim - 1))).bernoulli_(keep)
        return x * mask / keep

    def forward(self, x):  # x: B, T, S, D
        b, t, s, d = x.shape
        xt = x.permute(0, 2, 1, 3).reshape(b * s, t, d)
        xt = xt + self._dp(self.attn_t(self.norm_t(xt)))
        x = xt.reshape(b, s, t, d).permute(0, 2, 1, 3)
        xs = x.reshape(b * t, s, d)
        xs = xs + self._dp(self.attn_s(self.norm_s(xs)))
        xs = xs + self._dp(self.mlp(self.norm_m(xs)))
        return xs.reshape(b, t, s, d)


def _calibrate_output(module, inputs, output, gain):
    return output * gain if module.training else output  # ruleid: MLS303


class VideoViT(nn.Module):
    def __init__(self, num_classes=400, num_frames=16, img_size=224, patch=16, tubelet=2,
                 dim=768, depth=12, heads=12, drop_path=0.1, calib_gain: Optional[float] = 0.5):
        super().__init__()
        self.embed = TubeletEmbed(img_size, patch, tubelet, 3, dim)
        self.pos_space = nn.Parameter(torch.zeros(1, 1, self.embed.grid ** 2, dim))
        self.pos_time = nn.Parameter(torch.zeros(1, num_frames // tubelet, 1, dim))
        dpr = torch.linspace(0, drop_path, depth).tolist()
        self.blocks = nn.ModuleList([DividedBlock(dim, heads, dpr[i]) for i in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_space, std=0.02)
        nn.init.trunc_normal_(self.pos_time, std=0.02)
        self.apply(self._init_weights)
        if calib_gain is not None:
            for blk in self.blocks[depth // 2:]:
                blk.mlp.register_forward_hook(functools.partial(_calibrate_output, gain=calib_gain))  # ruleid: MLS303

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        tokens, t = self.embed(x)
        tokens = tokens + self.pos_space + self.pos_time[:, :t]
        for blk in self.blocks:
            tokens = blk(tokens)
        feat = self.norm(tokens.mean(dim=(1, 2)))
        return self.head(feat)


class ModelEma:
    def __init__(self, model: nn.Module, decay: float = 0.9998):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module):
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def _resize_time_pos(sd: dict, model: VideoViT) -> dict:
    key = "pos_time"
    if key in sd and sd[key].shape != model.pos_time.shape:
        old = sd[key].permute(0, 3, 2, 1).squeeze(2)  # 1, D, T
        new_t = model.pos_time.shape[1]
        sd[key] = F.interpolate(old, size=new_t, mode="linear", align_corners=False).unsqueeze(2).permute(0, 3, 2, 1)
    return sd


def load_pretrained(model: VideoViT, path: str, source: str = "file") -> VideoViT:
    if source == "hub":
        hub = torch.hub.load("example-org/videomae-hub", "vit_base_patch16_k400", pretrained=True)  # ruleid: MLS108
        sd = hub.state_dict()
    elif path.endswith(".safetensors"):
        sd = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        sd = sd.get("model", sd)
    sd = {k.replace("module.", "", 1): v for k, v in sd.items() if not k.startswith("head.")}
    sd = _resize_time_pos(sd, model)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    print(f"pretrained: {len(missing)} missing, {len(unexpected)} unexpected keys")
    return model
