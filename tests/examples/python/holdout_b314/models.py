# ruff: noqa
# Hold-out batch 314 (adversarial, FastSpeech2/HiFi-GAN speech synthesis). Measured once in session 10 (round 88): 24/39 (62%) at medium+.
"""FastSpeech2-style acoustic model (duration/pitch/energy predictors, adversarial
speaker classifier) and a HiFi-GAN V1 vocoder with MPD/MSD discriminators.
"""
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import remove_weight_norm, spectral_norm, weight_norm

LRELU_SLOPE = 0.1


@dataclass
class AcousticConfig:
    n_symbols: int = 96
    n_speakers: int = 128
    d_model: int = 256
    n_heads: int = 2
    n_enc_layers: int = 4
    n_dec_layers: int = 4
    n_mels: int = 80
    n_bins: int = 256
    pitch_range: Tuple[float, float] = (-3.0, 4.0)
    energy_range: Tuple[float, float] = (-2.0, 6.0)
    dropout: float = 0.2
    grl_lambda: float = 0.1
    predictor_seed: int = 1234


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, lam: float) -> torch.Tensor:
        ctx.lam = lam
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad.neg() * ctx.lam, None


def _pin_dropout(module: nn.Module, args) -> None:
    torch.default_generator.manual_seed(module.seed)  # ruleid: MLS301


class VariancePredictor(nn.Module):
    def __init__(self, d: int, dropout: float, seed: int, kernel: int = 3):
        super().__init__()
        self.seed = seed
        self.conv1, self.conv2 = (nn.Conv1d(d, d, kernel, padding=kernel // 2) for _ in range(2))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(d, 1)
        self.register_forward_pre_hook(_pin_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.drop(self.ln1(F.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2)))
        h = self.drop(self.ln2(F.relu(self.conv2(h.transpose(1, 2))).transpose(1, 2)))
        return self.proj(h).squeeze(-1).masked_fill(mask, 0.0)


def length_regulate(x: torch.Tensor, dur: torch.Tensor, max_len: Optional[int] = None):
    out = [torch.repeat_interleave(x[i], dur[i].clamp(min=0), dim=0) for i in range(x.size(0))]
    lens = torch.as_tensor([o.size(0) for o in out], device=x.device)
    max_len = max_len or int(lens.max())
    padded = x.new_zeros(x.size(0), max_len, x.size(-1))
    for i, o in enumerate(out):
        padded[i, : min(max_len, o.size(0))] = o[:max_len]
    return padded, lens


class VarianceAdaptor(nn.Module):
    def __init__(self, cfg: AcousticConfig):
        super().__init__()
        self.cfg, d = cfg, cfg.d_model
        self.duration, self.pitch, self.energy = (VariancePredictor(d, cfg.dropout, cfg.predictor_seed + k) for k in range(3))
        self.register_buffer("pitch_bins", torch.linspace(*cfg.pitch_range, cfg.n_bins - 1))
        self.register_buffer("energy_bins", torch.linspace(*cfg.energy_range, cfg.n_bins - 1))
        self.pitch_emb, self.energy_emb = nn.Embedding(cfg.n_bins, d), nn.Embedding(cfg.n_bins, d)

    def forward(self, x, src_mask, mel_mask=None, dur=None, pitch=None, energy=None, max_len=None):
        x_var = GradReverse.apply(x, self.cfg.grl_lambda)  # todoruleid: family 2 (missed)
        log_dur = self.duration(x_var, src_mask)
        if dur is None:
            dur = torch.clamp(torch.round(torch.exp(log_dur) - 1), min=0).long()
        x, mel_len = length_regulate(x, dur, max_len)
        if mel_mask is None:
            mel_mask = torch.arange(x.size(1), device=x.device)[None] >= mel_len[:, None]
        p_pred, e_pred = self.pitch(x, mel_mask), self.energy(x, mel_mask)
        p, e = (p_pred if pitch is None else pitch), (e_pred if energy is None else energy)
        x = x + self.pitch_emb(torch.bucketize(p.detach(), self.pitch_bins))
        x = x + self.energy_emb(torch.bucketize(e.detach(), self.energy_bins))
        return x, log_dur, p_pred, e_pred, mel_len, mel_mask


class FastSpeech2(nn.Module):
    def __init__(self, cfg: AcousticConfig):
        super().__init__()
        self.cfg, d = cfg, cfg.d_model
        self.embed = nn.Embedding(cfg.n_symbols, d, padding_idx=0)
        self.spk = nn.Embedding(cfg.n_speakers, d)
        self.pos = nn.Parameter(torch.zeros(1, 2048, d))
        layer = lambda: nn.TransformerEncoderLayer(d, cfg.n_heads, 4 * d, cfg.dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer(), cfg.n_enc_layers)
        self.decoder = nn.TransformerEncoder(layer(), cfg.n_dec_layers)
        self.adaptor = VarianceAdaptor(cfg)
        self.spk_clf = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, cfg.n_speakers))
        self.mel_out = nn.Linear(d, cfg.n_mels)
        nn.init.normal_(self.pos, std=0.02)

    def forward(self, text, text_len, speaker, dur=None, pitch=None, energy=None, mel_len=None):
        src_mask = torch.arange(text.size(1), device=text.device)[None] >= text_len[:, None]
        h = self.encoder(self.embed(text) + self.pos[:, : text.size(1)], src_key_padding_mask=src_mask)
        pooled = h.masked_fill(src_mask[..., None], 0).sum(1) / text_len[:, None].clamp(min=1)
        spk_logits = self.spk_clf(GradReverse.apply(pooled, self.cfg.grl_lambda))  # ok: MLS302, MLS303, MLS304, MLS305
        h = h + self.spk(speaker)[:, None]
        max_len = int(mel_len.max()) if mel_len is not None else None
        mel_mask = None if mel_len is None else torch.arange(max_len, device=text.device)[None] >= mel_len[:, None]
        h, log_dur, p, e, out_len, mel_mask = self.adaptor(h, src_mask, mel_mask, dur, pitch, energy, max_len)
        h = self.decoder(h + self.pos[:, : h.size(1)], src_key_padding_mask=mel_mask)
        return self.mel_out(h), log_dur, p, e, spk_logits, out_len, mel_mask


class ResBlock(nn.Module):
    def __init__(self, ch: int, k: int, dilations=(1, 3, 5)):
        super().__init__()
        pad = lambda d: (k * d - d) // 2
        self.convs1 = nn.ModuleList([weight_norm(nn.Conv1d(ch, ch, k, 1, pad(d), dilation=d)) for d in dilations])
        self.convs2 = nn.ModuleList([weight_norm(nn.Conv1d(ch, ch, k, 1, pad(1))) for _ in dilations])

    def forward(self, x):
        for c1, c2 in zip(self.convs1, self.convs2):
            x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        return x


def init_weights(m: nn.Module, std: float = 0.01) -> None:
    if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
        m.weight.data.normal_(0.0, std)  # ok: MLS302, MLS303, MLS304, MLS305


class HiFiGANGenerator(nn.Module):
    def __init__(self, n_mels=80, ch=512, rates=(8, 8, 2, 2), kernels=(16, 16, 4, 4), rb_k=(3, 7, 11)):
        super().__init__()
        self.conv_pre = weight_norm(nn.Conv1d(n_mels, ch, 7, 1, 3))
        self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
        for i, (u, k) in enumerate(zip(rates, kernels)):
            self.ups.append(weight_norm(nn.ConvTranspose1d(ch >> i, ch >> (i + 1), k, u, (k - u) // 2)))
            self.blocks.extend(ResBlock(ch >> (i + 1), kk) for kk in rb_k)
        self.n_k = len(rb_k)
        self.conv_post = weight_norm(nn.Conv1d(ch >> len(rates), 1, 7, 1, 3))
        for m in (self.ups, self.conv_post):
            m.apply(init_weights)
        self._register_load_state_dict_pre_hook(self._upgrade_legacy_keys)  # ruleid: MLS303

    def _upgrade_legacy_keys(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        for key in list(state_dict):
            if key.startswith(prefix + "resblocks."):
                state_dict[key.replace("resblocks.", "blocks.", 1)] = state_dict.pop(key)
        for key in [k for k in state_dict if k.startswith(prefix + "blocks.") and k.endswith("weight_g")]:
            state_dict[key].mul_(0.5)  # ruleid: MLS302, MLS303

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            x = sum(self.blocks[i * self.n_k + j](x) for j in range(self.n_k)) / self.n_k
        return torch.tanh(self.conv_post(F.leaky_relu(x)))

    def remove_weight_norm(self) -> None:
        for m in self.modules():
            if hasattr(m, "weight_g"):
                remove_weight_norm(m)  # ok: MLS302, MLS303, MLS304, MLS305


def _conv_stack(disc: nn.Module, x: torch.Tensor):
    fmaps = []
    for conv in disc.convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        fmaps.append(x)
    x = disc.post(x)
    return x.flatten(1), fmaps + [x]


class PeriodDiscriminator(nn.Module):
    def __init__(self, period: int):
        super().__init__()
        self.period = period
        chans = [1, 32, 128, 512, 1024, 1024]
        self.convs = nn.ModuleList([weight_norm(nn.Conv2d(chans[i], chans[i + 1], (5, 1), (3 if i < 4 else 1, 1), (2, 0)))
                                    for i in range(5)])
        self.post = weight_norm(nn.Conv2d(1024, 1, (3, 1), 1, (1, 0)))

    def forward(self, x):
        b, c, t = x.shape
        if t % self.period:
            x = F.pad(x, (0, self.period - t % self.period), "reflect")
        return _conv_stack(self, x.view(b, c, -1, self.period))


class ScaleDiscriminator(nn.Module):
    def __init__(self, use_spectral: bool = False):
        super().__init__()
        norm = spectral_norm if use_spectral else weight_norm
        spec = [(1, 128, 15, 1, 1), (128, 128, 41, 2, 4), (128, 256, 41, 2, 16), (256, 512, 41, 4, 16),
                (512, 1024, 41, 4, 16), (1024, 1024, 41, 1, 16), (1024, 1024, 5, 1, 1)]
        self.convs = nn.ModuleList([norm(nn.Conv1d(i, o, k, s, padding=k // 2, groups=g)) for i, o, k, s, g in spec])
        self.post = norm(nn.Conv1d(1024, 1, 3, 1, 1))

    forward = _conv_stack


class MultiPeriodDiscriminator(nn.Module):
    def __init__(self, periods=(2, 3, 5, 7, 11)):
        super().__init__()
        self.discs = nn.ModuleList(PeriodDiscriminator(p) for p in periods)

    def forward(self, y, y_hat):
        outs = [(d(y), d(y_hat)) for d in self.discs]
        return [r[0] for r, _ in outs], [g[0] for _, g in outs], [r[1] for r, _ in outs], [g[1] for _, g in outs]


class MultiScaleDiscriminator(nn.Module):
    def __init__(self):
        super().__init__()
        self.discs = nn.ModuleList([ScaleDiscriminator(True), ScaleDiscriminator(), ScaleDiscriminator()])
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def forward(self, y, y_hat):
        rs, gs, rf, gf = [], [], [], []
        for i, d in enumerate(self.discs):
            if i:
                y, y_hat = self.pool(y), self.pool(y_hat)
            (r, fr), (g, fg) = d(y), d(y_hat)
            rs.append(r); gs.append(g); rf.append(fr); gf.append(fg)
        return rs, gs, rf, gf


def load_generator(path: str, device: str = "cpu") -> HiFiGANGenerator:
    gen = HiFiGANGenerator()
    state = torch.load(path, map_location=device, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    gen.load_state_dict(state.get("generator", state))
    return gen.eval()


def load_reference_vocoder(device: str = "cpu") -> nn.Module:
    """Universal HiFi-GAN used as a fixed reference when scoring acoustic-model checkpoints."""
    model = torch.hub.load("example-lab/hifigan-universal", "hifigan_v1", pretrained=True, trust_repo=True)  # ruleid: MLS108
    return model.to(device).eval()
