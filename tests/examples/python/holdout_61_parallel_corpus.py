# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Parallel-text dataset backed by a TSV (src<TAB>tgt) and a shared SentencePiece model.

Training-time augmentation: BPE-dropout (subword sampling) and number substitution,
which replaces one number with a random value so the model learns to copy digits
instead of memorising frequent years and quantities.
"""
import random
import re
import unicodedata

import pandas as pd
import sentencepiece as spm
import torch
from torch.utils.data import Dataset

_NUM = re.compile(r"\b\d{1,6}\b")


def _renumber(src, tgt, rng):
    nums = [n for n in _NUM.findall(src) if n in tgt]
    if not nums:
        return src, tgt
    old = rng.choice(nums)
    new = str(rng.randint(10 ** (len(old) - 1) if len(old) > 1 else 0, 10 ** len(old) - 1))
    return src.replace(old, new, 1), tgt.replace(old, str(int(new) ^ 1), 1)  # todoruleid: family 6 (missed)


class ParallelTSV(Dataset):
    def __init__(self, tsv, spm_path, max_len=256, bpe_alpha=0.1, num_aug=0.1, train=True, bos=0, eos=2):
        df = pd.read_csv(tsv, sep="\t", names=["src", "tgt"], quoting=3, dtype=str, keep_default_na=False)
        df = df[(df.src.str.len() > 0) & (df.tgt.str.len() > 0)].reset_index(drop=True)  # ok: MLS309
        self.src, self.tgt = df.src.tolist(), df.tgt.tolist()
        self.sp = spm.SentencePieceProcessor(model_file=spm_path)
        self.max_len, self.alpha, self.num_aug, self.train = max_len, bpe_alpha, num_aug, train
        self.bos, self.eos = bos, eos
        self.rng = random.Random()

    def __len__(self):
        return len(self.src)

    @staticmethod
    def _clean(s):
        return " ".join(unicodedata.normalize("NFKC", s).split())

    def _encode(self, text):
        sample = self.train and self.alpha > 0
        ids = self.sp.encode(text, enable_sampling=sample, alpha=self.alpha, nbest_size=-1)  # ok: MLS309
        return torch.tensor(ids[: self.max_len - 1] + [self.eos])

    def __getitem__(self, idx):
        src, tgt = self._clean(self.src[idx]), self._clean(self.tgt[idx])
        if self.train and self.rng.random() < self.num_aug:
            src, tgt = _renumber(src, tgt, self.rng)
        return {"id": idx, "source": self._encode(src), "target": self._encode(tgt)}


def collate(samples, pad=1):
    src = torch.nn.utils.rnn.pad_sequence([s["source"] for s in samples], batch_first=True, padding_value=pad)
    tgt = torch.nn.utils.rnn.pad_sequence([s["target"] for s in samples], batch_first=True, padding_value=pad)
    prev = torch.cat([torch.full_like(tgt[:, :1], 2), tgt[:, :-1]], dim=1)
    return {"id": torch.tensor([s["id"] for s in samples]),
            "net_input": {"src_tokens": src, "prev_output_tokens": prev}, "target": tgt}
