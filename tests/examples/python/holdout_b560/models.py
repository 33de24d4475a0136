# ruff: noqa
# Hold-out batch 560 (families 6/7, speech translation and text-to-speech with a CUDA extension build). Measured once in session 25 (round 149): 8/30 (27%) at medium+.
"""Acoustic model (FastSpeech2-style), speech-to-unit translator and HiFi-GAN vocoder."""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm, weight_norm

try:  # custom CUDA kernels built by build_ext.py
    import tts_kernels
except ImportError:  # pragma: no cover - CPU / dev boxes
    tts_kernels = None
_HAS_KERNELS = tts_kernels is not None


def sequence_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    max_len = max_len or int(lengths.max())
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


class PositionalEncoding(nn.Module):
    def __init__(self, dim: int, max_len: int = 5000):
        super().__init__()
        pe = torch.zeros(max_len, dim)
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.register_buffer("pe", pe, persistent=False)
        self.alpha = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x + self.alpha * self.pe[: x.size(1)]


class FFTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ff: int, kernel: int = 9, dropout: float = 0.1):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.conv = nn.Sequential(nn.Conv1d(dim, ff, kernel, padding=kernel // 2), nn.ReLU(),
                                  nn.Conv1d(ff, dim, 1))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, pad_mask):
        a, _ = self.attn(x, x, x, key_padding_mask=pad_mask, need_weights=False)
        x = self.norm1(x + self.drop(a))
        c = self.conv(x.masked_fill(pad_mask[..., None], 0).transpose(1, 2)).transpose(1, 2)
        return self.norm2(x + self.drop(c)).masked_fill(pad_mask[..., None], 0)


class VariancePredictor(nn.Module):
    def __init__(self, dim: int, hidden: int = 256, kernel: int = 3, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(dim, hidden, kernel, padding=kernel // 2), nn.ReLU(), nn.Dropout(dropout),
            nn.Conv1d(hidden, hidden, kernel, padding=kernel // 2), nn.ReLU(), nn.Dropout(dropout))
        self.proj = nn.Linear(hidden, 1)

    def forward(self, x, pad_mask):
        h = self.net(x.transpose(1, 2)).transpose(1, 2)
        return self.proj(h).squeeze(-1).masked_fill(pad_mask, 0.0)


def length_regulate(x: torch.Tensor, durations: torch.Tensor, max_len: Optional[int] = None):
    if _HAS_KERNELS and x.is_cuda:
        return tts_kernels.length_regulate(x, durations.int(), max_len or 0)
    out = [torch.repeat_interleave(xi, di.clamp(min=0), dim=0) for xi, di in zip(x, durations)]
    lens = torch.tensor([o.size(0) for o in out], device=x.device)
    out = nn.utils.rnn.pad_sequence(out, batch_first=True)
    if max_len is not None:
        out = F.pad(out, (0, 0, 0, max(0, max_len - out.size(1))))[:, :max_len]
    return out, lens


class FastSpeech2(nn.Module):
    def __init__(self, n_symbols: int, n_speakers: int, n_mels: int = 80, dim: int = 256, heads: int = 2,
                 layers: int = 4, ff: int = 1024, n_bins: int = 256):
        super().__init__()
        self.embed = nn.Embedding(n_symbols, dim, padding_idx=0)
        self.spk = nn.Embedding(max(n_speakers, 1), dim)
        self.pos_enc, self.pos_dec = PositionalEncoding(dim), PositionalEncoding(dim)
        self.encoder = nn.ModuleList([FFTBlock(dim, heads, ff) for _ in range(layers)])
        self.decoder = nn.ModuleList([FFTBlock(dim, heads, ff) for _ in range(layers)])
        self.dur_pred, self.pitch_pred, self.energy_pred = (VariancePredictor(dim) for _ in range(3))
        self.register_buffer("pitch_bins", torch.linspace(3.5, 6.5, n_bins - 1))
        self.register_buffer("energy_bins", torch.linspace(0.0, 80.0, n_bins - 1))
        self.pitch_emb, self.energy_emb = nn.Embedding(n_bins, dim), nn.Embedding(n_bins, dim)
        self.mel_out = nn.Linear(dim, n_mels)
        self.postnet = nn.Sequential(*[nn.Sequential(nn.Conv1d(n_mels if i == 0 else 512, 512 if i < 4 else n_mels, 5, padding=2),
                                                     nn.Tanh() if i < 4 else nn.Identity()) for i in range(5)])

    def forward(self, phones, phone_lens, speakers, durations=None, pitch=None, energy=None, max_frames=None):
        src_pad = ~sequence_mask(phone_lens, phones.size(1))
        x = self.pos_enc(self.embed(phones))
        for blk in self.encoder:
            x = blk(x, src_pad)
        x = x + self.spk(speakers)[:, None, :]
        log_dur = self.dur_pred(x, src_pad)
        if durations is None:
            durations = torch.clamp(torch.round(torch.exp(log_dur) - 1), min=0).long().masked_fill(src_pad, 0)
        h, mel_lens = length_regulate(x, durations, max_frames)
        mel_pad = ~sequence_mask(mel_lens, h.size(1))
        p_hat, e_hat = self.pitch_pred(h, mel_pad), self.energy_pred(h, mel_pad)
        p = pitch if pitch is not None else p_hat
        e = energy if energy is not None else e_hat
        h = h + self.pitch_emb(torch.bucketize(p, self.pitch_bins)) + self.energy_emb(torch.bucketize(e, self.energy_bins))
        h = self.pos_dec(h)
        for blk in self.decoder:
            h = blk(h, mel_pad)
        mel = self.mel_out(h).transpose(1, 2)
        return {"mel": mel, "mel_post": mel + self.postnet(mel), "log_dur": log_dur, "pitch": p_hat,
                "energy": e_hat, "mel_lens": mel_lens, "src_pad": src_pad, "mel_pad": mel_pad}


class S2UTransformer(nn.Module):
    """Conv-subsampled Transformer encoder + autoregressive unit decoder (Lee et al. 2022)."""

    def __init__(self, vocab: int, n_feats: int = 80, dim: int = 512, heads: int = 8, enc_layers: int = 12,
                 dec_layers: int = 6, ff: int = 2048, dropout: float = 0.1):
        super().__init__()
        self.subsample = nn.Sequential(nn.Conv1d(n_feats, dim, 5, stride=2, padding=2), nn.GLU(dim=1),
                                       nn.Conv1d(dim // 2, 2 * dim, 5, stride=2, padding=2), nn.GLU(dim=1))
        self.pos = PositionalEncoding(dim, 8000)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(dim, heads, ff, dropout, batch_first=True, norm_first=True), enc_layers)
        self.embed = nn.Embedding(vocab, dim, padding_idx=0)
        self.decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(dim, heads, ff, dropout, batch_first=True, norm_first=True), dec_layers)
        self.out = nn.Linear(dim, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, src, src_lens, prev_output):
        x = self.subsample(src.transpose(1, 2)).transpose(1, 2)
        lens = torch.div(src_lens - 1, 4, rounding_mode="floor") + 1
        enc_pad = ~sequence_mask(lens, x.size(1))
        mem = self.encoder(self.pos(x), src_key_padding_mask=enc_pad)
        T = prev_output.size(1)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=src.device), 1)
        y = self.decoder(self.pos(self.embed(prev_output)), mem, tgt_mask=causal,
                         tgt_key_padding_mask=prev_output.eq(0), memory_key_padding_mask=enc_pad)
        return self.out(y)


# --------------------------------------------------------------------------- HiFi-GAN

LRELU = 0.1


class ResBlock(nn.Module):
    def __init__(self, ch: int, k: int, dilations=(1, 3, 5)):
        super().__init__()
        self.c1 = nn.ModuleList([weight_norm(nn.Conv1d(ch, ch, k, dilation=d, padding=(k * d - d) // 2)) for d in dilations])
        self.c2 = nn.ModuleList([weight_norm(nn.Conv1d(ch, ch, k, padding=k // 2)) for _ in dilations])

    def forward(self, x):
        for a, b in zip(self.c1, self.c2):
            x = x + b(F.leaky_relu(a(F.leaky_relu(x, LRELU)), LRELU))
        return x


class HiFiGANGenerator(nn.Module):
    def __init__(self, n_mels=80, ch=512, up_rates=(8, 8, 2, 2), up_kernels=(16, 16, 4, 4),
                 rb_kernels=(3, 7, 11)):
        super().__init__()
        self.pre = weight_norm(nn.Conv1d(n_mels, ch, 7, padding=3))
        self.ups, self.res = nn.ModuleList(), nn.ModuleList()
        for i, (u, k) in enumerate(zip(up_rates, up_kernels)):
            c_in, c_out = ch // (2 ** i), ch // (2 ** (i + 1))
            self.ups.append(weight_norm(nn.ConvTranspose1d(c_in, c_out, k, u, padding=(k - u) // 2)))
            self.res.append(nn.ModuleList([ResBlock(c_out, rk) for rk in rb_kernels]))
        self.post = weight_norm(nn.Conv1d(c_out, 1, 7, padding=3))

    def forward(self, mel):
        x = self.pre(mel)
        for up, blocks in zip(self.ups, self.res):
            x = up(F.leaky_relu(x, LRELU))
            x = sum(b(x) for b in blocks) / len(blocks)
        return torch.tanh(self.post(F.leaky_relu(x))).squeeze(1)


class PeriodDisc(nn.Module):
    def __init__(self, period: int):
        super().__init__()
        self.period = period
        chans = [1, 32, 128, 512, 1024, 1024]
        self.convs = nn.ModuleList([weight_norm(nn.Conv2d(chans[i], chans[i + 1], (5, 1), (3 if i < 4 else 1, 1), (2, 0))) for i in range(5)])
        self.post = weight_norm(nn.Conv2d(1024, 1, (3, 1), 1, (1, 0)))

    def forward(self, x):
        b, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), mode="reflect")
        x = x.view(b, 1, -1, self.period)
        feats = []
        for c in self.convs:
            x = F.leaky_relu(c(x), LRELU)
            feats.append(x)
        x = self.post(x)
        feats.append(x)
        return x.flatten(1), feats


class ScaleDisc(nn.Module):
    def __init__(self, use_spectral: bool = False):
        super().__init__()
        norm = spectral_norm if use_spectral else weight_norm
        spec = [(1, 128, 15, 1, 1), (128, 128, 41, 2, 4), (128, 256, 41, 2, 16), (256, 512, 41, 4, 16),
                (512, 1024, 41, 4, 16), (1024, 1024, 41, 1, 16), (1024, 1024, 5, 1, 1)]
        self.convs = nn.ModuleList([norm(nn.Conv1d(i, o, k, s, groups=g, padding=k // 2)) for i, o, k, s, g in spec])
        self.post = norm(nn.Conv1d(1024, 1, 3, padding=1))

    def forward(self, x):
        x, feats = x.unsqueeze(1), []
        for c in self.convs:
            x = F.leaky_relu(c(x), LRELU)
            feats.append(x)
        x = self.post(x)
        feats.append(x)
        return x.flatten(1), feats


class HiFiGANDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.discs = nn.ModuleList([PeriodDisc(p) for p in (2, 3, 5, 7, 11)] + [ScaleDisc(True), ScaleDisc(), ScaleDisc()])
        self.pools = [nn.Identity(), nn.AvgPool1d(4, 2, 2), nn.AvgPool1d(4, 2, 2)]

    def forward(self, y) -> Tuple[List[torch.Tensor], List[List[torch.Tensor]]]:
        outs, fmaps, ys = [], [], y
        for i, d in enumerate(self.discs):
            if i >= 5:
                ys = self.pools[i - 5](ys.unsqueeze(1)).squeeze(1)
                o, f = d(ys)
            else:
                o, f = d(y)
            outs.append(o)
            fmaps.append(f)
        return outs, fmaps
