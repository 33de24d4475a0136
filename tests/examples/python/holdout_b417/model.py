# ruff: noqa
# Hold-out batch 417 (textbook, TTS). Measured once in session 17 (round 114): 21/30 (70%) at medium+.
"""FastSpeech2 acoustic model and HiFi-GAN generator / discriminators."""

import logging
import math
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import remove_weight_norm, spectral_norm, weight_norm

logger = logging.getLogger(__name__)

LRELU_SLOPE = 0.1


def lengths_to_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    """True at padded positions."""
    max_len = max_len or int(lengths.max().item())
    ids = torch.arange(max_len, device=lengths.device).unsqueeze(0)
    return ids >= lengths.unsqueeze(1)


class PositionalEncoding(nn.Module):
    def __init__(self, dim: int, max_len: int = 4000):
        super().__init__()
        pe = torch.zeros(max_len, dim)
        pos = torch.arange(max_len).unsqueeze(1).float()
        div = torch.exp(torch.arange(0, dim, 2).float() * (-math.log(10000.0) / dim))
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)
        self.alpha = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.alpha * self.pe[:, : x.size(1)]


class ConvFFN(nn.Module):
    def __init__(self, dim: int, hidden: int, kernel: int = 9, dropout: float = 0.1):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, hidden, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(hidden, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x.transpose(1, 2)))
        y = self.conv2(self.dropout(y)).transpose(1, 2)
        return self.dropout(y)


class FFTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, kernel: int, dropout: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = ConvFFN(dim, hidden, kernel, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        y, _ = self.attn(x, x, x, key_padding_mask=pad_mask, need_weights=False)
        x = self.norm1(x + self.dropout(y))
        x = self.norm2(x + self.ffn(x))
        return x.masked_fill(pad_mask.unsqueeze(-1), 0.0)


class VariancePredictor(nn.Module):
    """Two conv layers + linear projection, used for duration, pitch and energy."""

    def __init__(self, dim: int, hidden: int = 256, kernel: int = 3, dropout: float = 0.5):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, hidden, kernel, padding=kernel // 2)
        self.norm1 = nn.LayerNorm(hidden)
        self.conv2 = nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2)
        self.norm2 = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2)
        y = self.dropout(self.norm1(y))
        y = F.relu(self.conv2(y.transpose(1, 2))).transpose(1, 2)
        y = self.dropout(self.norm2(y))
        return self.linear(y).squeeze(-1).masked_fill(pad_mask, 0.0)


class LengthRegulator(nn.Module):
    def forward(self, x: torch.Tensor, durations: torch.Tensor, max_len: Optional[int] = None):
        durations = durations.clamp(min=0)
        mel_lens = durations.sum(dim=1)
        max_len = max_len or int(mel_lens.max().item())
        out = x.new_zeros(x.size(0), max_len, x.size(2))
        for b in range(x.size(0)):
            expanded = torch.repeat_interleave(x[b], durations[b], dim=0)[:max_len]
            out[b, : expanded.size(0)] = expanded
        return out, mel_lens.clamp(max=max_len)


class VarianceAdaptor(nn.Module):
    def __init__(self, dim: int, n_bins: int = 256, pitch_range=(-3.0, 8.0), energy_range=(-2.0, 8.0)):
        super().__init__()
        self.duration_predictor = VariancePredictor(dim)
        self.pitch_predictor = VariancePredictor(dim)
        self.energy_predictor = VariancePredictor(dim)
        self.length_regulator = LengthRegulator()
        self.register_buffer("pitch_bins", torch.linspace(*pitch_range, n_bins - 1), persistent=False)
        self.register_buffer("energy_bins", torch.linspace(*energy_range, n_bins - 1), persistent=False)
        self.pitch_embedding = nn.Embedding(n_bins, dim)
        self.energy_embedding = nn.Embedding(n_bins, dim)
        self.duration_predictor.linear.register_forward_hook(lambda mod, inp, out: out.detach())  # ruleid: MLS303

    def forward(self, x, src_mask, durations=None, pitch=None, energy=None, max_mel_len=None,
                d_control: float = 1.0, p_control: float = 1.0, e_control: float = 1.0):
        log_dur_pred = self.duration_predictor(x, src_mask)
        pitch_pred = self.pitch_predictor(x, src_mask) * p_control
        energy_pred = self.energy_predictor(x, src_mask) * e_control

        pitch_target = pitch if pitch is not None else pitch_pred
        energy_target = energy if energy is not None else energy_pred
        x = x + self.pitch_embedding(torch.bucketize(pitch_target, self.pitch_bins))
        x = x + self.energy_embedding(torch.bucketize(energy_target, self.energy_bins))

        if durations is None:
            durations = torch.clamp(torch.round((torch.exp(log_dur_pred) - 1) * d_control), min=0).long()
            durations = durations.masked_fill(src_mask, 0)
        x, mel_lens = self.length_regulator(x, durations, max_mel_len)
        return x, mel_lens, log_dur_pred, pitch_pred, energy_pred


class FastSpeech2(nn.Module):
    def __init__(self, n_phones: int, n_speakers: int = 1, n_mels: int = 80, dim: int = 256,
                 heads: int = 2, enc_layers: int = 4, dec_layers: int = 6, ffn_hidden: int = 1024,
                 ffn_kernel: int = 9, dropout: float = 0.2):
        super().__init__()
        self.embed = nn.Embedding(n_phones, dim, padding_idx=0)
        self.pos_enc = PositionalEncoding(dim)
        self.pos_dec = PositionalEncoding(dim)
        self.encoder = nn.ModuleList(
            [FFTBlock(dim, heads, ffn_hidden, ffn_kernel, dropout) for _ in range(enc_layers)]
        )
        self.speaker_embed = nn.Embedding(n_speakers, dim) if n_speakers > 1 else None
        self.variance_adaptor = VarianceAdaptor(dim)
        self.decoder = nn.ModuleList(
            [FFTBlock(dim, heads, ffn_hidden, ffn_kernel, dropout) for _ in range(dec_layers)]
        )
        self.mel_linear = nn.Linear(dim, n_mels)
        self.postnet = PostNet(n_mels)

    def forward(self, phones, src_lens, speakers=None, durations=None, pitch=None, energy=None,
                max_mel_len=None, **controls) -> Dict[str, torch.Tensor]:
        src_mask = lengths_to_mask(src_lens, phones.size(1))
        x = self.pos_enc(self.embed(phones))
        for layer in self.encoder:
            x = layer(x, src_mask)
        if self.speaker_embed is not None and speakers is not None:
            x = x + self.speaker_embed(speakers).unsqueeze(1)

        x, mel_lens, log_dur, pitch_pred, energy_pred = self.variance_adaptor(
            x, src_mask, durations, pitch, energy, max_mel_len, **controls
        )
        mel_mask = lengths_to_mask(mel_lens, x.size(1))
        x = self.pos_dec(x)
        for layer in self.decoder:
            x = layer(x, mel_mask)
        mel = self.mel_linear(x)
        mel_post = mel + self.postnet(mel)
        return {
            "mel": mel,
            "mel_post": mel_post,
            "log_dur": log_dur,
            "pitch": pitch_pred,
            "energy": energy_pred,
            "src_mask": src_mask,
            "mel_mask": mel_mask,
            "mel_lens": mel_lens,
        }


class PostNet(nn.Module):
    def __init__(self, n_mels: int, dim: int = 512, kernel: int = 5, layers: int = 5):
        super().__init__()
        convs = []
        for i in range(layers):
            c_in = n_mels if i == 0 else dim
            c_out = n_mels if i == layers - 1 else dim
            convs.append(nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2), nn.BatchNorm1d(c_out)))
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.transpose(1, 2)
        for i, conv in enumerate(self.convs):
            y = conv(y)
            if i < len(self.convs) - 1:
                y = torch.tanh(y)
            y = F.dropout(y, 0.5, self.training)
        return y.transpose(1, 2)


# --------------------------------------------------------------------------- HiFi-GAN


def init_weights(m: nn.Module, mean: float = 0.0, std: float = 0.01) -> None:
    if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
        m.weight.data.normal_(mean, std)  # ok: MLS302, MLS303, MLS304, MLS305


class ResBlock(nn.Module):
    def __init__(self, channels: int, kernel: int = 3, dilations=(1, 3, 5)):
        super().__init__()
        self.convs1 = nn.ModuleList([
            weight_norm(nn.Conv1d(channels, channels, kernel, dilation=d, padding=(kernel * d - d) // 2))
            for d in dilations
        ])
        self.convs2 = nn.ModuleList([
            weight_norm(nn.Conv1d(channels, channels, kernel, padding=(kernel - 1) // 2))
            for _ in dilations
        ])
        self.convs1.apply(init_weights)
        self.convs2.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for c1, c2 in zip(self.convs1, self.convs2):
            y = c1(F.leaky_relu(x, LRELU_SLOPE))
            y = c2(F.leaky_relu(y, LRELU_SLOPE))
            x = x + y
        return x

    def remove_weight_norm(self) -> None:
        for c in list(self.convs1) + list(self.convs2):
            remove_weight_norm(c)


class HiFiGANGenerator(nn.Module):
    def __init__(self, n_mels: int = 80, upsample_rates=(8, 8, 2, 2), upsample_kernels=(16, 16, 4, 4),
                 initial_channels: int = 512, resblock_kernels=(3, 7, 11),
                 resblock_dilations=((1, 3, 5), (1, 3, 5), (1, 3, 5))):
        super().__init__()
        self.num_kernels = len(resblock_kernels)
        self.conv_pre = weight_norm(nn.Conv1d(n_mels, initial_channels, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        ch = initial_channels
        for u, k in zip(upsample_rates, upsample_kernels):
            self.ups.append(weight_norm(nn.ConvTranspose1d(ch, ch // 2, k, u, padding=(k - u) // 2)))
            ch //= 2
            for rk, rd in zip(resblock_kernels, resblock_dilations):
                self.resblocks.append(ResBlock(ch, rk, rd))
        self.conv_post = weight_norm(nn.Conv1d(ch, 1, 7, padding=3))
        self.ups.apply(init_weights)
        self.conv_post.apply(init_weights)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            xs = sum(self.resblocks[i * self.num_kernels + j](x) for j in range(self.num_kernels))
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))
        return torch.tanh(x)

    def remove_weight_norm(self) -> None:
        for layer in self.ups:
            remove_weight_norm(layer)
        for block in self.resblocks:
            block.remove_weight_norm()
        remove_weight_norm(self.conv_pre)
        remove_weight_norm(self.conv_post)

    @classmethod
    def from_pretrained(cls, path: str, map_location="cpu", **kwargs) -> "HiFiGANGenerator":
        model = cls(**kwargs)
        ckpt = torch.load(path, map_location=map_location)  # todoruleid: family 10 (missed)  # ruleid: MLS102
        state = ckpt.get("generator", ckpt)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            logger.warning("vocoder init: %d missing, %d unexpected keys", len(missing), len(unexpected))
        return model


class DiscriminatorP(nn.Module):
    def __init__(self, period: int, kernel: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        chans = [1, 32, 128, 512, 1024]
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(chans[i], chans[i + 1], (kernel, 1), (stride, 1), padding=(2, 0)))
            for i in range(4)
        ] + [weight_norm(nn.Conv2d(1024, 1024, (kernel, 1), 1, padding=(2, 0)))])
        self.conv_post = weight_norm(nn.Conv2d(1024, 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        fmap = []
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), "reflect")
            t = x.shape[-1]
        x = x.view(b, c, t // self.period, self.period)
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class DiscriminatorS(nn.Module):
    def __init__(self, use_spectral_norm: bool = False):
        super().__init__()
        norm = spectral_norm if use_spectral_norm else weight_norm
        self.convs = nn.ModuleList([
            norm(nn.Conv1d(1, 128, 15, 1, padding=7)),
            norm(nn.Conv1d(128, 128, 41, 2, groups=4, padding=20)),
            norm(nn.Conv1d(128, 256, 41, 2, groups=16, padding=20)),
            norm(nn.Conv1d(256, 512, 41, 4, groups=16, padding=20)),
            norm(nn.Conv1d(512, 1024, 41, 4, groups=16, padding=20)),
            norm(nn.Conv1d(1024, 1024, 41, 1, groups=16, padding=20)),
            norm(nn.Conv1d(1024, 1024, 5, 1, padding=2)),
        ])
        self.conv_post = norm(nn.Conv1d(1024, 1, 3, 1, padding=1))

    def forward(self, x: torch.Tensor):
        fmap = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), LRELU_SLOPE)
            fmap.append(x)
        x = self.conv_post(x)
        fmap.append(x)
        return torch.flatten(x, 1, -1), fmap


class MultiDiscriminator(nn.Module):
    def __init__(self, periods=(2, 3, 5, 7, 11)):
        super().__init__()
        self.mpd = nn.ModuleList([DiscriminatorP(p) for p in periods])
        self.msd = nn.ModuleList([DiscriminatorS(True), DiscriminatorS(), DiscriminatorS()])
        self.pools = nn.ModuleList([nn.Identity(), nn.AvgPool1d(4, 2, padding=2), nn.AvgPool1d(4, 2, padding=2)])

    def forward(self, y: torch.Tensor, y_hat: torch.Tensor):
        real_out, fake_out, real_fm, fake_fm = [], [], [], []
        for d in self.mpd:
            r, rf = d(y)
            f, ff = d(y_hat)
            real_out.append(r); fake_out.append(f); real_fm.append(rf); fake_fm.append(ff)
        yy, yh = y, y_hat
        for pool, d in zip(self.pools, self.msd):
            yy, yh = pool(yy), pool(yh)
            r, rf = d(yy)
            f, ff = d(yh)
            real_out.append(r); fake_out.append(f); real_fm.append(rf); fake_fm.append(ff)
        return real_out, fake_out, real_fm, fake_fm


def discriminator_loss(real_out, fake_out) -> torch.Tensor:
    loss = 0.0
    for r, f in zip(real_out, fake_out):
        loss = loss + torch.mean((1 - r) ** 2) + torch.mean(f ** 2)
    return loss


def generator_adv_loss(fake_out) -> torch.Tensor:
    return sum(torch.mean((1 - f) ** 2) for f in fake_out)


def feature_matching_loss(real_fm, fake_fm) -> torch.Tensor:
    loss = 0.0
    for rs, fs in zip(real_fm, fake_fm):
        for r, f in zip(rs, fs):
            loss = loss + torch.mean(torch.abs(r.detach() - f))
    return loss * 2


def fastspeech2_loss(out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    src_keep = ~out["src_mask"]
    mel_keep = ~out["mel_mask"]
    target = batch["mel"][:, : out["mel"].size(1)]
    mel_keep = mel_keep[:, : target.size(1)].unsqueeze(-1)
    mel_loss = F.l1_loss(out["mel"].masked_select(mel_keep), target.masked_select(mel_keep))
    post_loss = F.l1_loss(out["mel_post"].masked_select(mel_keep), target.masked_select(mel_keep))
    log_dur_target = torch.log(batch["durations"].float() + 1)
    dur_loss = F.mse_loss(out["log_dur"].masked_select(src_keep), log_dur_target.masked_select(src_keep))
    pitch_loss = F.mse_loss(out["pitch"].masked_select(src_keep), batch["pitch"].masked_select(src_keep))
    energy_loss = F.mse_loss(out["energy"].masked_select(src_keep), batch["energy"].masked_select(src_keep))
    total = mel_loss + post_loss + dur_loss + pitch_loss + energy_loss
    return {
        "total": total,
        "mel": mel_loss,
        "postnet": post_loss,
        "duration": dur_loss,
        "pitch": pitch_loss,
        "energy": energy_loss,
    }
