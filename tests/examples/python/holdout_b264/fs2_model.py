# ruff: noqa
# Hold-out batch 264 (families 2/5/6, speech synthesis). Measured once in session 9 (round 75): 11/30 (37%) at medium+.
"""FastSpeech2-style non-autoregressive acoustic model.

Phoneme encoder -> variance adaptor (duration / pitch / energy) -> length
regulator -> mel decoder -> postnet. Pitch and energy are predicted at the
phoneme level and quantised into learned embeddings, following the usual
FastSpeech2 recipe. Inference exposes pitch/energy/duration control factors.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def sinusoid_table(n_pos, d_model):
    pos = torch.arange(n_pos).unsqueeze(1).float()
    div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    table = torch.zeros(n_pos, d_model)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)
    return table


def make_pad_mask(lengths, max_len=None):
    max_len = int(lengths.max()) if max_len is None else max_len
    ids = torch.arange(max_len, device=lengths.device).unsqueeze(0)
    return ids >= lengths.unsqueeze(1)


class ConvFFTBlock(nn.Module):
    """Self-attention followed by a two-layer 1D-conv feed-forward network."""

    def __init__(self, d_model, n_heads, d_ff, kernel=9, dropout=0.1):
        super().__init__()
        self.attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.conv1 = nn.Conv1d(d_model, d_ff, kernel, padding=kernel // 2)
        self.conv2 = nn.Conv1d(d_ff, d_model, 1)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, pad_mask):
        h, _ = self.attn(x, x, x, key_padding_mask=pad_mask, need_weights=False)
        x = self.norm1(x + self.drop(h))
        h = self.conv2(F.relu(self.conv1(x.transpose(1, 2)))).transpose(1, 2)
        x = self.norm2(x + self.drop(h))
        return x.masked_fill(pad_mask.unsqueeze(-1), 0.0)


class VariancePredictor(nn.Module):
    def __init__(self, d_model, d_hidden=256, kernel=3, dropout=0.5):
        super().__init__()
        self.conv1 = nn.Conv1d(d_model, d_hidden, kernel, padding=kernel // 2)
        self.ln1 = nn.LayerNorm(d_hidden)
        self.conv2 = nn.Conv1d(d_hidden, d_hidden, kernel, padding=kernel // 2)
        self.ln2 = nn.LayerNorm(d_hidden)
        self.proj = nn.Linear(d_hidden, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, pad_mask):
        h = F.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2)
        h = self.drop(self.ln1(h))
        h = F.relu(self.conv2(h.transpose(1, 2))).transpose(1, 2)
        h = self.drop(self.ln2(h))
        return self.proj(h).squeeze(-1).masked_fill(pad_mask, 0.0)


def _soft_range(module, inputs, output):
    """Soft-clamp normalised predictions at inference so outliers don't hit the last bin."""
    if module.training:
        return None
    return 1.5 * torch.tanh(output / 1.5)  # ruleid: MLS303


def _duration_grad_guard(grad):
    return grad.clamp(-1e-4, 1e-4)  # ruleid: MLS302, MLS303


def length_regulate(x, durations, max_len=None):
    expanded = [torch.repeat_interleave(seq, dur.clamp(min=0).long(), dim=0)
                for seq, dur in zip(x, durations)]
    mel_lens = torch.tensor([e.size(0) for e in expanded], device=x.device)
    max_len = int(mel_lens.max()) if max_len is None else max_len
    out = x.new_zeros(x.size(0), max_len, x.size(2))
    for i, e in enumerate(expanded):
        n = min(e.size(0), max_len)
        out[i, :n] = e[:n]
    return out, mel_lens.clamp(max=max_len)


class VarianceAdaptor(nn.Module):
    def __init__(self, d_model, n_bins=256, pitch_range=(-3.0, 8.0), energy_range=(-1.5, 9.0)):
        super().__init__()
        self.duration_predictor = VariancePredictor(d_model)
        self.pitch_predictor = VariancePredictor(d_model)
        self.energy_predictor = VariancePredictor(d_model)
        self.register_buffer("pitch_bins", torch.linspace(*pitch_range, n_bins - 1))
        self.register_buffer("energy_bins", torch.linspace(*energy_range, n_bins - 1))
        self.pitch_embedding = nn.Embedding(n_bins, d_model)
        self.energy_embedding = nn.Embedding(n_bins, d_model)
        self.energy_predictor.register_forward_hook(_soft_range)  # ruleid: MLS303

    def forward(self, x, src_mask, max_mel=None, d_target=None, p_target=None, e_target=None,
                p_control=1.0, e_control=1.0, d_control=1.0):
        log_d_pred = self.duration_predictor(x, src_mask)
        if self.training:
            log_d_pred.register_hook(_duration_grad_guard)  # ruleid: MLS303

        p_pred = self.pitch_predictor(x, src_mask)
        if p_target is not None:
            p_emb = self.pitch_embedding(torch.bucketize(p_target, self.pitch_bins))
        else:
            p_pred = p_pred * p_control  # ok: MLS302, MLS303, MLS304, MLS305
            p_emb = self.pitch_embedding(torch.bucketize(p_pred, self.pitch_bins))
        x = x + p_emb

        e_pred = self.energy_predictor(x, src_mask)
        if e_target is not None:
            e_emb = self.energy_embedding(torch.bucketize(e_target, self.energy_bins))
        else:
            e_pred = e_pred * e_control
            e_emb = self.energy_embedding(torch.bucketize(e_pred, self.energy_bins))
        x = x + e_emb

        if d_target is not None:
            d_used = d_target
        else:
            d_used = torch.clamp(torch.round(torch.exp(log_d_pred) - 1.0) * d_control, min=0)
            d_used = d_used.masked_fill(src_mask, 0)
        x, mel_lens = length_regulate(x, d_used, max_mel)
        return x, log_d_pred, p_pred, e_pred, d_used, mel_lens


class PostNet(nn.Module):
    def __init__(self, n_mels=80, ch=512, kernel=5, n_layers=5):
        super().__init__()
        layers = []
        for i in range(n_layers):
            c_in = n_mels if i == 0 else ch
            c_out = n_mels if i == n_layers - 1 else ch
            layers.append(nn.Sequential(nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2),
                                        nn.BatchNorm1d(c_out)))
        self.layers = nn.ModuleList(layers)
        self.drop = nn.Dropout(0.5)

    def forward(self, mel):
        x = mel.transpose(1, 2)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.tanh(x)
            x = self.drop(x)
        return x.transpose(1, 2)


class FastSpeech2(nn.Module):
    def __init__(self, n_symbols, n_mels=80, d_model=256, n_heads=2, n_enc=4, n_dec=6,
                 d_ff=1024, n_speakers=1, max_pos=3000):
        super().__init__()
        self.src_emb = nn.Embedding(n_symbols, d_model, padding_idx=0)
        self.register_buffer("pos_table", sinusoid_table(max_pos, d_model), persistent=False)
        self.encoder = nn.ModuleList([ConvFFTBlock(d_model, n_heads, d_ff) for _ in range(n_enc)])
        self.decoder = nn.ModuleList([ConvFFTBlock(d_model, n_heads, d_ff) for _ in range(n_dec)])
        self.speaker_emb = nn.Embedding(n_speakers, d_model) if n_speakers > 1 else None
        self.adaptor = VarianceAdaptor(d_model)
        self.mel_linear = nn.Linear(d_model, n_mels)
        self.postnet = PostNet(n_mels)
        self.reset_parameters()

    def reset_parameters(self):
        for name, p in self.named_parameters():
            if p.dim() > 1 and "embedding" not in name:
                nn.init.xavier_uniform_(p)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.normal_(self.src_emb.weight, 0.0, self.src_emb.embedding_dim ** -0.5)
        with torch.no_grad():
            self.src_emb.weight[self.src_emb.padding_idx].zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, src, src_lens, speakers=None, mel_lens=None, max_mel=None,
                d_target=None, p_target=None, e_target=None,
                p_control=1.0, e_control=1.0, d_control=1.0):
        src_mask = make_pad_mask(src_lens, src.size(1))
        x = self.src_emb(src) + self.pos_table[: src.size(1)].unsqueeze(0)
        for block in self.encoder:
            x = block(x, src_mask)
        if self.speaker_emb is not None and speakers is not None:
            x = x + self.speaker_emb(speakers).unsqueeze(1)

        x, log_d_pred, p_pred, e_pred, d_used, pred_mel_lens = self.adaptor(
            x, src_mask, max_mel, d_target, p_target, e_target, p_control, e_control, d_control)
        mel_lens = pred_mel_lens if mel_lens is None else mel_lens
        mel_mask = make_pad_mask(mel_lens, x.size(1))

        x = x + self.pos_table[: x.size(1)].unsqueeze(0)
        for block in self.decoder:
            x = block(x, mel_mask)
        mel = self.mel_linear(x)
        mel_post = mel + self.postnet(mel)
        mel_post = mel_post.masked_fill(mel_mask.unsqueeze(-1), 0.0)
        return {
            "mel": mel, "mel_post": mel_post, "log_d_pred": log_d_pred, "pitch_pred": p_pred,
            "energy_pred": e_pred, "durations": d_used, "src_mask": src_mask,
            "mel_mask": mel_mask, "mel_lens": mel_lens,
        }
