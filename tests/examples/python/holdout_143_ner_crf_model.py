# ruff: noqa
# Hold-out batch 143 (short files: NER, translation, CLIP, federated learning). Measured once in session 5 (round 45): 11/18 (61%) at medium+.
"""BERT encoder with a linear-chain CRF head for named entity recognition."""
import os
import random

import numpy as np
import torch
import torch.nn as nn
from transformers import AutoModel


def set_seed(seed):
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


class CRF(nn.Module):
    def __init__(self, num_tags, forbidden_starts=()):
        super().__init__()
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.start = nn.Parameter(torch.zeros(num_tags))
        self.end = nn.Parameter(torch.zeros(num_tags))
        nn.init.uniform_(self.transitions, -0.1, 0.1)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.no_grad():
            for t in forbidden_starts:  # an I-X tag can never open a sentence
                self.start[t] = -1e4  # ok: MLS302, MLS303, MLS304, MLS305

    def nll(self, emissions, tags, mask):
        score = self.start[tags[:, 0]] + emissions[:, 0].gather(1, tags[:, :1]).squeeze(1)
        alpha = self.start + emissions[:, 0]
        for t in range(1, emissions.size(1)):
            m = mask[:, t]
            trans = self.transitions[tags[:, t - 1], tags[:, t]]
            emit = emissions[:, t].gather(1, tags[:, t:t + 1]).squeeze(1)
            score = score + (trans + emit) * m
            nxt = torch.logsumexp(alpha.unsqueeze(2) + self.transitions + emissions[:, t].unsqueeze(1), dim=1)
            alpha = torch.where(m.unsqueeze(1).bool(), nxt, alpha)
        last = tags.gather(1, (mask.sum(1).long() - 1).unsqueeze(1)).squeeze(1)
        score = score + self.end[last]
        return (torch.logsumexp(alpha + self.end, dim=1) - score).mean()


class BertCrfTagger(nn.Module):
    def __init__(self, encoder_name, num_tags, dropout=0.1, forbidden_starts=()):
        super().__init__()
        self.encoder = AutoModel.from_pretrained(encoder_name)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(self.encoder.config.hidden_size, num_tags)
        nn.init.xavier_uniform_(self.proj.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.proj.bias)
        self.crf = CRF(num_tags, forbidden_starts)

    def forward(self, input_ids, attention_mask, labels=None):
        h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        emissions = self.proj(self.drop(h))
        if labels is None:
            return emissions
        return self.crf.nll(emissions, labels.clamp(min=0), attention_mask.float())


def load_tagger(path, encoder_name, num_tags):
    model = BertCrfTagger(encoder_name, num_tags)
    state = torch.load(os.path.join(path, "tagger.pt"), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    return model.eval()
