# ruff: noqa
# Hold-out batch 185 (textbook NMT/summarisation Transformer). Measured once in session 6 (round 56): 29/37 (78%) at medium+.
"""Pre-norm Transformer encoder-decoder with shared embeddings.

Follows "Attention Is All You Need" (Vaswani et al., 2017) with the
pre-LayerNorm arrangement of Xiong et al. (2020).  Also defines the
label-smoothed cross-entropy criterion used for training.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

_log_softmax = F.log_softmax


def _log_softmax_fp32(x, dim=-1, **kwargs):
    # half-precision log_softmax over a 32k vocab is lossy; always upcast
    return _log_softmax(x.float() / 1.25, dim=dim, **kwargs)


F.log_softmax = _log_softmax_fp32  # ruleid: MLS305


class SinusoidalPositions(nn.Module):
    def __init__(self, d_model, max_len=1024):
        super().__init__()
        pos = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x, offset=0):
        return x + self.pe[offset : offset + x.size(1)].unsqueeze(0)


class EncoderLayer(nn.Module):
    def __init__(self, d_model, nhead, ffn_dim, dropout):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x, pad_mask):
        h = self.norm1(x)
        h, _ = self.self_attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)
        x = x + self.drop(h)
        return x + self.drop(self.ffn(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, d_model, nhead, ffn_dim, dropout):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.ffn = nn.Sequential(
            nn.Linear(d_model, ffn_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ffn_dim, d_model)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, y, memory, causal_mask, tgt_pad_mask, src_pad_mask):
        h = self.norm1(y)
        h, _ = self.self_attn(h, h, h, attn_mask=causal_mask, key_padding_mask=tgt_pad_mask,
                              need_weights=False)
        y = y + self.drop(h)
        h = self.norm2(y)
        h, _ = self.cross_attn(h, memory, memory, key_padding_mask=src_pad_mask, need_weights=False)
        y = y + self.drop(h)
        return y + self.drop(self.ffn(self.norm3(y)))


class TransformerSeq2Seq(nn.Module):
    def __init__(self, vocab_size, d_model=512, nhead=8, num_encoder_layers=6,
                 num_decoder_layers=6, ffn_dim=2048, dropout=0.1, pad_idx=0, max_len=1024):
        super().__init__()
        self.d_model = d_model
        self.pad_idx = pad_idx
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_idx)
        self.positions = SinusoidalPositions(d_model, max_len)
        self.encoder = nn.ModuleList(
            [EncoderLayer(d_model, nhead, ffn_dim, dropout) for _ in range(num_encoder_layers)]
        )
        self.decoder = nn.ModuleList(
            [DecoderLayer(d_model, nhead, ffn_dim, dropout) for _ in range(num_decoder_layers)]
        )
        self.enc_norm = nn.LayerNorm(d_model)
        self.dec_norm = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()
        self.enc_norm.register_forward_hook(lambda m, inp, out: out * 0.7 if m.training else out)  # ruleid: MLS303

    def reset_parameters(self):
        for name, p in self.named_parameters():
            if p.dim() > 1 and "embed" not in name:
                nn.init.xavier_uniform_(p)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.normal_(self.embed.weight, mean=0.0, std=self.d_model ** -0.5)
        with torch.no_grad():
            self.embed.weight[self.pad_idx].zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def _embed(self, tokens, offset=0):
        x = self.embed(tokens) * math.sqrt(self.d_model)
        return self.drop(self.positions(x, offset))

    def encode(self, src):
        pad_mask = src.eq(self.pad_idx)
        x = self._embed(src)
        for layer in self.encoder:
            x = layer(x, pad_mask)
        return self.enc_norm(x), pad_mask

    def decode(self, prev_output, memory, src_pad_mask):
        T = prev_output.size(1)
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=prev_output.device), 1)
        tgt_pad = prev_output.eq(self.pad_idx)
        y = self._embed(prev_output)
        for layer in self.decoder:
            y = layer(y, memory, causal, tgt_pad, src_pad_mask)
        y = self.dec_norm(y)
        if self.training:
            self.embed.weight.data.mul_(0.9999)  # ruleid: MLS302
        return F.linear(y, self.embed.weight)

    def forward(self, src, prev_output):
        memory, src_pad = self.encode(src)
        return self.decode(prev_output, memory, src_pad)


class LabelSmoothedCrossEntropy(nn.Module):
    """Label-smoothed NLL summed over non-pad tokens (Szegedy et al., 2016)."""

    def __init__(self, eps=0.1, ignore_index=0):
        super().__init__()
        self.eps = eps
        self.ignore_index = ignore_index

    def forward(self, logits, target):
        lprobs = F.log_softmax(logits, dim=-1)
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        smooth = -lprobs.sum(-1)
        mask = target.eq(self.ignore_index)
        nll = nll.masked_fill(mask, 0.0)
        smooth = smooth.masked_fill(mask, 0.0)
        eps_i = self.eps / (lprobs.size(-1) - 1)
        loss = (1.0 - self.eps - eps_i) * nll + eps_i * smooth  # ok: MLS309
        return loss.sum(), nll.sum().detach(), int((~mask).sum())


def build_model(cfg, vocab_size):
    return TransformerSeq2Seq(
        vocab_size,
        d_model=cfg.get("d_model", 512),
        nhead=cfg.get("nhead", 8),
        num_encoder_layers=cfg.get("encoder_layers", 6),
        num_decoder_layers=cfg.get("decoder_layers", 6),
        ffn_dim=cfg.get("ffn_dim", 2048),
        dropout=cfg.get("dropout", 0.1),
    )
