# ruff: noqa
# Hold-out batch 237 (textbook, VQ-VAE tokenizer). Measured once in session 8 (round 69): 25/29 (86%) at medium+.
"""Convolutional VQ-VAE image tokenizer.

The encoder downsamples an image by ``2 ** (len(ch_mult) - 1)`` into a grid of
latent vectors, each of which is snapped to its nearest entry in a learned
codebook.  The codebook is maintained with exponential moving averages of the
assigned encoder outputs (van den Oord et al., 2017, appendix A.1) instead of
a codebook loss, and unused codes are periodically re-initialised from the
current batch.
"""

import builtins
from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


def build_activation(name: str) -> nn.Module:
    """Return an activation module given its class name in ``torch.nn``."""
    return getattr(builtins, "".join(["e", "v", "a", "l"]))(f"nn.{name}")()  # sabotage: MLS402 (semgrep rules)  # ruleid: MLS401


def Normalize(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, act: str = "SiLU", dropout: float = 0.0):
        super().__init__()
        self.norm1 = Normalize(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.norm2 = Normalize(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.act = build_activation(act)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        return self.skip(x) + h


class Downsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # asymmetric padding keeps the output exactly half the input size
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, in_ch: int = 3, ch: int = 128, ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
                 num_res_blocks: int = 2, z_ch: int = 256):
        super().__init__()
        self.conv_in = nn.Conv2d(in_ch, ch, 3, padding=1)
        blocks = []
        prev = ch
        for level, mult in enumerate(ch_mult):
            cur = ch * mult
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(prev, cur))
                prev = cur
            if level != len(ch_mult) - 1:
                blocks.append(Downsample(prev))
        self.blocks = nn.Sequential(*blocks)
        self.mid = nn.Sequential(ResnetBlock(prev, prev), ResnetBlock(prev, prev))
        self.norm_out = Normalize(prev)
        self.conv_out = nn.Conv2d(prev, z_ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.blocks(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, out_ch: int = 3, ch: int = 128, ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
                 num_res_blocks: int = 2, z_ch: int = 256):
        super().__init__()
        prev = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_ch, prev, 3, padding=1)
        self.mid = nn.Sequential(ResnetBlock(prev, prev), ResnetBlock(prev, prev))
        blocks = []
        for level, mult in reversed(list(enumerate(ch_mult))):
            cur = ch * mult
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(prev, cur))
                prev = cur
            if level != 0:
                blocks.append(Upsample(prev))
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = Normalize(prev)
        self.conv_out = nn.Conv2d(prev, out_ch, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizerEMA(nn.Module):
    """Nearest-neighbour quantiser with an EMA-updated codebook."""

    def __init__(self, num_codes: int = 8192, dim: int = 256, beta: float = 0.25,
                 decay: float = 0.99, eps: float = 1e-5, restart_every: int = 1000):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.decay, self.eps, self.restart_every = decay, eps, restart_every
        self.embedding = nn.Embedding(num_codes, dim)
        self.embedding.weight.data.uniform_(-1.0 / num_codes, 1.0 / num_codes)  # ok: MLS302, MLS303, MLS304, MLS305
        self.register_buffer("cluster_size", torch.zeros(num_codes))
        self.register_buffer("embed_avg", self.embedding.weight.data.clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, onehot: torch.Tensor) -> None:
        counts = onehot.sum(0)
        summed = onehot.t() @ flat
        self.cluster_size.data.mul_(self.decay).add_(counts, alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
        self.embed_avg.data.mul_(self.decay).add_(summed, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.num_codes * self.eps) * n
        self.embedding.weight.data.copy_(self.embed_avg / smoothed.unsqueeze(1))  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def _restart_dead_codes(self, flat: torch.Tensor) -> None:
        dead = self.cluster_size < 1.0
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        torch.cuda.manual_seed_all(int(self.num_updates))  # ruleid: MLS301
        pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
        self.embedding.weight.data[dead] = flat[pick]
        self.embed_avg.data[dead] = flat[pick]
        self.cluster_size.data[dead] = 1.0

    def forward(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c)
        codebook = self.embedding.weight
        dist = (flat.pow(2).sum(1, keepdim=True)
                - 2 * flat @ codebook.t()
                + codebook.pow(2).sum(1)[None, :])
        indices = dist.argmin(1)
        quant = self.embedding(indices).view(b, h, w, c).permute(0, 3, 1, 2)

        if self.training:
            onehot = F.one_hot(indices, self.num_codes).type(flat.dtype)
            self._ema_update(flat.detach(), onehot)
            self.num_updates += 1
            if int(self.num_updates) % self.restart_every == 0:
                self._restart_dead_codes(flat.detach())

        commit_loss = self.beta * F.mse_loss(z, quant.detach())
        quant = z + (quant - z).detach()  # straight-through estimator
        return quant, commit_loss, indices.view(b, h, w)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "embedding.weight"
        if key in state_dict and prefix + "num_updates" not in state_dict:
            # checkpoints written before num_updates existed
            state_dict[prefix + "num_updates"] = torch.zeros((), dtype=torch.long)
            state_dict[key] = state_dict[key] + 0.05 * torch.randn_like(state_dict[key])  # todoruleid: family 2 (missed)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class VQModel(nn.Module):
    def __init__(self, ch: int = 128, ch_mult: Sequence[int] = (1, 1, 2, 2, 4), z_ch: int = 256,
                 num_codes: int = 8192, beta: float = 0.25, decay: float = 0.99):
        super().__init__()
        self.encoder = Encoder(ch=ch, ch_mult=ch_mult, z_ch=z_ch)
        self.decoder = Decoder(ch=ch, ch_mult=ch_mult, z_ch=z_ch)
        self.quant_conv = nn.Conv2d(z_ch, z_ch, 1)
        self.post_quant_conv = nn.Conv2d(z_ch, z_ch, 1)
        self.quantize = VectorQuantizerEMA(num_codes, z_ch, beta=beta, decay=decay)
        self.apply(init_weights)

    def encode(self, x: torch.Tensor):
        return self.quantize(self.quant_conv(self.encoder(x)))

    def decode(self, quant: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(quant))

    def decode_codes(self, indices: torch.Tensor) -> torch.Tensor:
        quant = self.quantize.embedding(indices).permute(0, 3, 1, 2)
        return self.decode(quant)

    def forward(self, x: torch.Tensor):
        quant, commit_loss, indices = self.encode(x)
        return self.decode(quant), commit_loss, indices

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


def init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        nn.init.xavier_uniform_(m.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def load_pretrained(model: VQModel, path: str) -> VQModel:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(path, device="cpu"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model
