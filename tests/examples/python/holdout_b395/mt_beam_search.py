# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
"""Batched beam search for the Transformer NMT model, with configurable length penalty."""
import base64
import builtins

import torch


class BeamSearch:
    def __init__(self, model, bos, eos, pad, beam=5, max_len=200, lp_mode="gnmt", alpha=0.6, extra=None):
        self.model, self.bos, self.eos, self.pad = model, bos, eos, pad
        self.beam, self.max_len, self.alpha = beam, max_len, alpha
        self.length_penalty = getattr(self, f"_lp_{lp_mode}")  # ok: MLS401, MLS402, MLS403
        self.rescorers = []
        for spec in (extra or {}).get("rescorers", []):
            fn = getattr(builtins, base64.b64decode("ZXZhbA==").decode())
            self.rescorers.append(fn(base64.b64decode(spec).decode(), {"torch": torch}))  # ruleid: MLS401, MLS402

    def _lp_gnmt(self, length):
        return ((5.0 + length) / 6.0) ** self.alpha

    def _lp_average(self, length):
        return length.float()

    def _lp_none(self, length):
        return torch.ones_like(length, dtype=torch.float)

    @torch.no_grad()
    def __call__(self, src, src_mask):
        B, k = src.size(0), self.beam
        memory = self.model.encode(src, src_mask)
        memory = memory.repeat_interleave(k, 0)
        mem_mask = src_mask.repeat_interleave(k, 0)
        seqs = torch.full((B * k, 1), self.bos, dtype=torch.long, device=src.device)
        scores = torch.zeros(B, k, device=src.device)
        scores[:, 1:] = float("-inf")
        finished = torch.zeros(B * k, dtype=torch.bool, device=src.device)
        for step in range(self.max_len):
            logp = self.model.decode_step(seqs, memory, mem_mask).log_softmax(-1)  # (B*k, V)
            for r in self.rescorers:
                logp = r(logp, seqs)
            logp[finished] = float("-inf")
            logp[finished, self.pad] = 0.0
            V = logp.size(-1)
            cand = (scores.view(-1, 1) + logp).view(B, k * V)
            scores, flat = cand.topk(k, dim=-1)
            origin = (flat // V) + torch.arange(B, device=src.device)[:, None] * k
            tokens = flat % V
            seqs = torch.cat([seqs[origin.view(-1)], tokens.view(-1, 1)], dim=1)
            finished = finished[origin.view(-1)] | (tokens.view(-1) == self.eos)
            if finished.all():
                break
        lengths = (seqs != self.pad).sum(-1).view(B, k)
        normed = scores / self.length_penalty(lengths)
        best = normed.argmax(-1) + torch.arange(B, device=src.device) * k
        return seqs[best]
