# ruff: noqa
# Hold-out batch 389 (textbook, Conformer speech recognition). Measured once in session 15 (round 107): 20/31 (65%) at medium+.
"""Conformer encoder + Transformer decoder, joint CTC/attention training; two-pass decoding
(CTC prefix beam search, then attention rescoring of the n-best list)."""

import math
from collections import defaultdict
from itertools import groupby
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

IGNORE_ID = -1
NEG_INF = -float("inf")

def make_pad_mask(lengths: torch.Tensor, max_len: Optional[int] = None) -> torch.Tensor:
    max_len = max_len or int(lengths.max())
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) >= lengths.unsqueeze(1)

class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float, max_len: int = 5000):
        super().__init__()
        self.xscale = math.sqrt(d_model)
        self.dropout = nn.Dropout(dropout)
        pe = torch.zeros(max_len, d_model)
        pos = torch.arange(0, max_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * -(math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x * self.xscale + self.pe[:, : x.size(1)])

class Conv2dSubsampling4(nn.Module):
    def __init__(self, idim: int, odim: int, dropout: float):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, odim, 3, 2), nn.ReLU(),
            nn.Conv2d(odim, odim, 3, 2), nn.ReLU(),
        )
        self.out = nn.Linear(odim * (((idim - 1) // 2 - 1) // 2), odim)
        self.pos = PositionalEncoding(odim, dropout)

    def forward(self, x: torch.Tensor, lens: torch.Tensor):
        x = self.conv(x.unsqueeze(1))
        b, c, t, f = x.size()
        x = self.out(x.transpose(1, 2).contiguous().view(b, t, c * f))
        lens = ((lens - 1) // 2 - 1) // 2
        return self.pos(x), lens

class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(d_model), nn.Linear(d_model, d_ff), nn.SiLU(),
            nn.Dropout(dropout), nn.Linear(d_ff, d_model), nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.net(x)

class ConvModule(nn.Module):
    def __init__(self, d_model: int, kernel_size: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.pw1 = nn.Conv1d(d_model, 2 * d_model, 1)
        self.dw = nn.Conv1d(d_model, d_model, kernel_size, padding=kernel_size // 2, groups=d_model)
        self.bn = nn.BatchNorm1d(d_model)
        self.pw2 = nn.Conv1d(d_model, d_model, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, pad_mask):
        x = self.norm(x).masked_fill(pad_mask.unsqueeze(-1), 0.0).transpose(1, 2)
        x = F.glu(self.pw1(x), dim=1)
        x = F.silu(self.bn(self.dw(x)))
        x = self.dropout(self.pw2(x)).transpose(1, 2)
        return x

class ConformerBlock(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, kernel_size: int, dropout: float):
        super().__init__()
        self.ff1 = FeedForward(d_model, d_ff, dropout)
        self.att_norm = nn.LayerNorm(d_model)
        self.att = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.att_drop = nn.Dropout(dropout)
        self.conv = ConvModule(d_model, kernel_size, dropout)
        self.ff2 = FeedForward(d_model, d_ff, dropout)
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, x, pad_mask):
        x = x + 0.5 * self.ff1(x)
        h = self.att_norm(x)
        h, _ = self.att(h, h, h, key_padding_mask=pad_mask, need_weights=False)
        x = x + self.att_drop(h)
        x = x + self.conv(x, pad_mask)
        x = x + 0.5 * self.ff2(x)
        return self.final_norm(x)

class ConformerEncoder(nn.Module):
    def __init__(self, idim: int, d_model=256, n_heads=4, d_ff=1024, n_layers=12,
                 kernel_size=31, dropout=0.1):
        super().__init__()
        self.embed = Conv2dSubsampling4(idim, d_model, dropout)
        self.layers = nn.ModuleList(
            [ConformerBlock(d_model, n_heads, d_ff, kernel_size, dropout) for _ in range(n_layers)]
        )

    def forward(self, feats, feat_lens):
        x, lens = self.embed(feats, feat_lens)
        pad_mask = make_pad_mask(lens, x.size(1))
        for layer in self.layers:
            x = layer(x, pad_mask)
        return x, lens

class TransformerDecoder(nn.Module):
    def __init__(self, vocab_size: int, d_model=256, n_heads=4, d_ff=2048, n_layers=6, dropout=0.1):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d_model)
        self.pos = PositionalEncoding(d_model, dropout)
        layer = nn.TransformerDecoderLayer(d_model, n_heads, d_ff, dropout, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, n_layers)
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, vocab_size)

    def forward(self, memory, memory_mask, ys_in):
        L = ys_in.size(1)
        causal = torch.triu(torch.ones(L, L, dtype=torch.bool, device=ys_in.device), diagonal=1)
        tgt_pad = ys_in.eq(IGNORE_ID)
        x = self.pos(self.embed(ys_in.masked_fill(tgt_pad, 0)))
        x = self.decoder(x, memory, tgt_mask=causal, tgt_key_padding_mask=tgt_pad,
                         memory_key_padding_mask=memory_mask)
        return self.out(self.norm(x))

class LabelSmoothingLoss(nn.Module):
    def __init__(self, size: int, smoothing: float, padding_idx: int = IGNORE_ID):
        super().__init__()
        self.size = size
        self.smoothing = smoothing
        self.confidence = 1.0 - smoothing
        self.padding_idx = padding_idx

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        b = logits.size(0)
        logits = logits.reshape(-1, self.size)
        target = target.reshape(-1)
        ignore = target == self.padding_idx
        true_dist = torch.full_like(logits, self.smoothing / (self.size - 1))
        true_dist.scatter_(1, target.masked_fill(ignore, 0).unsqueeze(1), self.confidence)  # ok: MLS309
        kl = F.kl_div(F.log_softmax(logits, dim=1), true_dist, reduction="none")
        return kl.masked_fill(ignore.unsqueeze(1), 0.0).sum() / b

def _detach_memory(module, inputs, output):
    return output[0].detach(), output[1]  # ruleid: MLS303

class ASRModel(nn.Module):
    def __init__(self, idim: int, vocab_size: int, sos_id: int, eos_id: int, blank_id: int = 0,
                 ctc_weight: float = 0.3, lsm_weight: float = 0.1, encoder_conf: Optional[Dict] = None,
                 decoder_conf: Optional[Dict] = None):
        super().__init__()
        encoder_conf = encoder_conf or {}
        decoder_conf = decoder_conf or {}
        self.vocab_size = vocab_size
        self.sos_id, self.eos_id, self.blank_id = sos_id, eos_id, blank_id
        self.ctc_weight = ctc_weight
        self.encoder = ConformerEncoder(idim, **encoder_conf)
        d_model = encoder_conf.get("d_model", 256)
        self.decoder = TransformerDecoder(vocab_size, d_model=d_model, **decoder_conf)
        self.ctc_lo = nn.Linear(d_model, vocab_size)
        self.ctc_loss = nn.CTCLoss(blank=blank_id, reduction="sum", zero_infinity=True)
        self.att_loss = LabelSmoothingLoss(vocab_size, lsm_weight)
        if 0.0 < ctc_weight < 1.0:
            # keep the cross-attention branch from back-propagating noisy
            # alignment gradients into the shared encoder
            self.encoder.register_forward_hook(_detach_memory)  # ruleid: MLS303

    def forward(self, feats, feat_lens, ys, ys_lens, ys_in, ys_out) -> Tuple[torch.Tensor, Dict]:
        enc, enc_lens = self.encoder(feats, feat_lens)
        enc_mask = make_pad_mask(enc_lens, enc.size(1))
        b = feats.size(0)

        log_probs = F.log_softmax(self.ctc_lo(enc), dim=-1).transpose(0, 1)
        targets = ys.masked_fill(ys.eq(IGNORE_ID), 0)
        loss_ctc = self.ctc_loss(log_probs.float(), targets, enc_lens, ys_lens) / b

        logits = self.decoder(enc, enc_mask, ys_in)
        loss_att = self.att_loss(logits, ys_out)
        with torch.no_grad():
            valid = ys_out.ne(IGNORE_ID)
            acc = (logits.argmax(-1).eq(ys_out) & valid).sum().float() / valid.sum().clamp(min=1)

        loss = self.ctc_weight * loss_ctc + (1.0 - self.ctc_weight) * loss_att
        return loss, {"loss_ctc": loss_ctc.detach(), "loss_att": loss_att.detach(), "acc": acc}

    @torch.no_grad()
    def ctc_greedy(self, feats, feat_lens) -> List[List[int]]:
        enc, enc_lens = self.encoder(feats, feat_lens)
        best = self.ctc_lo(enc).argmax(-1)
        return [[tok for tok, _ in groupby(seq[:n]) if tok != self.blank_id]
                for seq, n in zip(best.tolist(), enc_lens.tolist())]

    @staticmethod
    def _log_add(xs: List[float]) -> float:
        m = max(xs)
        if m == NEG_INF:
            return NEG_INF
        return m + math.log(sum(math.exp(x - m) for x in xs))

    def _ctc_prefix_beam(self, log_probs: torch.Tensor, beam: int):
        cur = [((), (0.0, NEG_INF))]
        for t in range(log_probs.size(0)):
            logp = log_probs[t]
            nxt = defaultdict(lambda: (NEG_INF, NEG_INF))
            top_v, top_i = logp.topk(beam)
            for ps, s in zip(top_v.tolist(), top_i.tolist()):
                for prefix, (pb, pnb) in cur:
                    last = prefix[-1] if prefix else None
                    if s == self.blank_id:
                        n_pb, n_pnb = nxt[prefix]
                        nxt[prefix] = (self._log_add([n_pb, pb + ps, pnb + ps]), n_pnb)
                    elif s == last:
                        n_pb, n_pnb = nxt[prefix]
                        nxt[prefix] = (n_pb, self._log_add([n_pnb, pnb + ps]))
                        ext = prefix + (s,)
                        n_pb, n_pnb = nxt[ext]
                        nxt[ext] = (n_pb, self._log_add([n_pnb, pb + ps]))
                    else:
                        ext = prefix + (s,)
                        n_pb, n_pnb = nxt[ext]
                        nxt[ext] = (n_pb, self._log_add([n_pnb, pb + ps, pnb + ps]))
            cur = sorted(nxt.items(), key=lambda kv: self._log_add(list(kv[1])), reverse=True)[:beam]
        return [(list(p), self._log_add(list(sc))) for p, sc in cur]

    @torch.no_grad()
    def attention_rescoring(self, feats, feat_lens, beam: int = 10, ctc_weight: float = 0.5,
                            length_bonus: float = 0.0) -> List[List[int]]:
        enc, enc_lens = self.encoder(feats, feat_lens)
        ctc_logp = F.log_softmax(self.ctc_lo(enc), dim=-1)
        results = []
        for i in range(enc.size(0)):
            T = int(enc_lens[i])
            nbest = self._ctc_prefix_beam(ctc_logp[i, :T].cpu(), beam)
            if len(nbest) == 1 and not nbest[0][0]:
                results.append([])
                continue
            hyps = [h for h, _ in nbest]
            dev = enc.device
            pad_in = pad_sequence([torch.tensor([self.sos_id] + h, device=dev) for h in hyps],
                                  batch_first=True, padding_value=IGNORE_ID)
            pad_out = pad_sequence([torch.tensor(h + [self.eos_id], device=dev) for h in hyps],
                                   batch_first=True, padding_value=IGNORE_ID)
            memory = enc[i : i + 1, :T].expand(len(hyps), -1, -1)
            mem_mask = torch.zeros(len(hyps), T, dtype=torch.bool, device=dev)
            logp = F.log_softmax(self.decoder(memory, mem_mask, pad_in), dim=-1)
            valid = pad_out.ne(IGNORE_ID)
            tok_lp = logp.gather(-1, pad_out.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            att_scores = (tok_lp * valid).sum(-1).tolist()
            best, best_score = hyps[0], NEG_INF
            for h, (_, ctc_sc), att_sc in zip(hyps, nbest, att_scores):
                score = att_sc + ctc_weight * ctc_sc + length_bonus * len(h)
                if score > best_score:
                    best, best_score = h, score
            results.append(best)
        return results
