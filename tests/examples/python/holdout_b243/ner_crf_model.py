# ruff: noqa
# Hold-out batch 243 (short files). Measured once in session 8 (round 70): 15/18 (83%) at medium+.
"""BiLSTM encoder with a linear-chain CRF head for BIO named-entity tagging (forward algorithm + Viterbi)."""
import numpy as np
import torch
import torch.nn as nn


class BiLSTMCRF(nn.Module):
    def __init__(self, vocab_size, n_tags, start_id, stop_id, emb=100, hidden=256, pretrained=None):
        super().__init__()
        self.start_id, self.stop_id = start_id, stop_id
        self.emb = nn.Embedding(vocab_size, emb, padding_idx=0)
        if pretrained is not None:
            vecs = np.load(pretrained)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            self.emb.weight.data[: len(vecs)].copy_(torch.from_numpy(vecs))  # ok: MLS302, MLS303, MLS304, MLS305
        self.lstm = nn.LSTM(emb, hidden // 2, batch_first=True, bidirectional=True)
        self.proj = nn.Linear(hidden, n_tags)
        self.transitions = nn.Parameter(torch.empty(n_tags, n_tags))
        nn.init.uniform_(self.transitions, -0.1, 0.1)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.no_grad():
            self.transitions[:, start_id] = -1e4  # ok: MLS302, MLS303, MLS304, MLS305
            self.transitions[stop_id, :] = -1e4

    def emissions(self, ids):
        h, _ = self.lstm(self.emb(ids))
        return self.proj(h)

    def _log_partition(self, em, mask):
        alpha = self.transitions[self.start_id].unsqueeze(0) + em[:, 0]
        for t in range(1, em.size(1)):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + self.transitions.unsqueeze(0), dim=1) + em[:, t]
            alpha = torch.where(mask[:, t:t + 1], nxt, alpha)
        return torch.logsumexp(alpha + self.transitions[:, self.stop_id], dim=1)

    def _gold_score(self, em, tags, mask):
        b = torch.arange(em.size(0), device=em.device)
        score = self.transitions[self.start_id, tags[:, 0]] + em[b, 0, tags[:, 0]]
        for t in range(1, em.size(1)):
            step = self.transitions[tags[:, t - 1], tags[:, t]] + em[b, t, tags[:, t]]
            score = score + step * mask[:, t]
        last = tags.gather(1, (mask.sum(1, keepdim=True) - 1)).squeeze(1)
        return score + self.transitions[last, self.stop_id]

    def neg_log_likelihood(self, ids, tags, mask):
        em = self.emissions(ids)
        tags = tags.clamp(min=0)
        return (self._log_partition(em, mask) - self._gold_score(em, tags, mask)).mean()

    @torch.no_grad()
    def decode(self, ids, mask):
        em = self.emissions(ids)
        score = self.transitions[self.start_id].unsqueeze(0) + em[:, 0]
        back = []
        for t in range(1, em.size(1)):
            best, idx = (score.unsqueeze(2) + self.transitions.unsqueeze(0)).max(dim=1)
            keep = torch.arange(em.size(2), device=em.device).expand_as(idx)
            back.append(torch.where(mask[:, t:t + 1], idx, keep))
            score = torch.where(mask[:, t:t + 1], best + em[:, t], score)
        score = score + self.transitions[:, self.stop_id]
        best_last = score.argmax(1)
        paths = [best_last]
        for idx in reversed(back):
            best_last = idx.gather(1, best_last.unsqueeze(1)).squeeze(1)
            paths.insert(0, best_last)
        return torch.stack(paths, 1)


def load_tagger(path, **kw):
    model = BiLSTMCRF(**kw)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model.eval()
