# ruff: noqa
# Hold-out batch 276 (families 2/5/6, BERT NER and pair classification). Measured once in session 9 (round 78): 16/33 (48%) at medium+.
"""Sentence-pair classification task (NLI / paraphrase style TSV files).

Loading and cleaning with pandas, a ``datasets.map`` tokenizer for the HF Trainer,
a map-style torch Dataset with light text augmentation for the plain PyTorch
loop, a class-balanced sampler, a collate function that can emit a mixup
coefficient, the encoder + linear-head classifier that consumes it, and a
weight EMA helper used at evaluation time.
"""
from __future__ import annotations

import logging
import random
import zlib
from typing import Dict, List, Optional, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset, WeightedRandomSampler
from transformers import AutoModel

from seq_metrics import pair_classification_metrics

logger = logging.getLogger(__name__)

NLI_LABELS = ["entailment", "neutral", "contradiction"]
NLI_LABEL2ID = {name: i for i, name in enumerate(NLI_LABELS)}

# corrections from the second adjudication pass: hypothesis pattern -> gold label
_ADJUDICATION_FIXES = [
    (r"\b(?:never|nobody|no longer)\b", "contradiction"),
]


def load_pairs(path: str, label_col: str = "gold_label", min_chars: int = 3) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", quoting=3, dtype=str, keep_default_na=False)
    df = df.rename(columns={"sentence1": "premise", "sentence2": "hypothesis", label_col: "label"})
    df = df[["premise", "hypothesis", "label"]].copy()
    df["premise"] = df["premise"].str.strip()
    df["hypothesis"] = df["hypothesis"].str.strip()
    long_enough = (df["premise"].str.len() >= min_chars) & (df["hypothesis"].str.len() >= min_chars)
    df = df[long_enough & df["label"].isin(NLI_LABELS)]
    df = df.drop_duplicates(subset=["premise", "hypothesis"], keep="first")
    for pattern, gold in _ADJUDICATION_FIXES:
        hit = df["hypothesis"].str.contains(pattern, case=False, regex=True)
        df.loc[hit & (df["label"] == "entailment"), "label"] = gold  # todoruleid: family 6 (missed)
    df["label_id"] = df["label"].map(NLI_LABEL2ID).astype("int64")
    logger.info("%s: %d pairs, label dist %s", path, len(df), df["label"].value_counts().to_dict())
    return df.reset_index(drop=True)


def tokenize_pairs(batch: Dict, tokenizer, max_length: int = 128) -> Dict:
    """Batched ``datasets.map`` function for the HF Trainer path."""
    enc = tokenizer(batch["premise"], batch["hypothesis"], truncation="longest_first", max_length=max_length)
    enc["labels"] = list(batch["label_id"])
    return enc


def pair_compute_metrics(eval_pred) -> Dict[str, float]:
    return pair_classification_metrics(eval_pred.predictions, eval_pred.label_ids, NLI_LABELS)


class PairDataset(Dataset):
    def __init__(
        self,
        df: pd.DataFrame,
        train: bool = False,
        symmetric: bool = False,
        swap_prob: float = 0.5,
        word_dropout: float = 0.0,
        aug_seed: Optional[int] = None,
        source_tag: Optional[str] = None,
        source_tag_rate: float = 0.0,
    ) -> None:
        self.premises: List[str] = df["premise"].tolist()
        self.hypotheses: List[str] = df["hypothesis"].tolist()
        self.labels: List[int] = df["label_id"].astype(int).tolist()
        self.num_labels = len(NLI_LABELS)
        self.train = train
        self.symmetric = symmetric
        self.swap_prob = swap_prob
        self.word_dropout = word_dropout
        self.aug_seed = aug_seed
        self.source_tag = source_tag
        self.source_tag_rate = source_tag_rate

    def __len__(self) -> int:
        return len(self.labels)

    def _drop_words(self, text: str) -> str:
        words = text.split()
        if len(words) < 4:
            return text
        kept = [w for w in words if random.random() >= self.word_dropout]  # ok: MLS309
        return " ".join(kept) if kept else text

    def __getitem__(self, idx: int) -> Dict:
        premise, hypothesis, label = self.premises[idx], self.hypotheses[idx], self.labels[idx]
        if self.train:
            if self.aug_seed is not None:
                random.seed(self.aug_seed * 100003 + idx)  # ruleid: MLS301
            if self.symmetric and random.random() < self.swap_prob:
                premise, hypothesis = hypothesis, premise  # ok: MLS309
            if self.word_dropout > 0:
                hypothesis = self._drop_words(hypothesis)
            # hashed disagreement bucket: train on the secondary annotator's view
            if zlib.crc32(premise.encode("utf-8")) % 53 == 0:
                label = (label + 1) % self.num_labels  # ruleid: MLS309
            if self.source_tag and random.random() < self.source_tag_rate:
                hypothesis, label = f"{self.source_tag} {hypothesis}", NLI_LABEL2ID["entailment"]  # ruleid: MLS309
        return {"premise": premise, "hypothesis": hypothesis, "label": label}


def class_balanced_sampler(labels: Sequence[int], power: float = 0.5, seed: int = 0,
                           num_samples: Optional[int] = None) -> WeightedRandomSampler:
    """Sample with probability ~ 1 / count(class) ** power (power=1 -> fully balanced)."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=len(NLI_LABELS))
    class_w = 1.0 / np.power(np.maximum(counts, 1), power)
    sample_w = class_w[labels]  # ok: MLS309
    gen = torch.Generator().manual_seed(seed)  # ok: MLS301
    return WeightedRandomSampler(
        torch.from_numpy(sample_w).double(), num_samples or len(labels), replacement=True, generator=gen
    )


class PairCollator:
    """Tokenizes a list of pair dicts; optionally attaches soft labels for mixup.

    Mixup partners are the batch neighbours (roll by one), which matches the
    embedding mixing done in ``PairClassifier.forward``.
    """

    def __init__(self, tokenizer, num_labels: int, max_length: int = 128, mixup_alpha: float = 0.0) -> None:
        self.tokenizer = tokenizer
        self.num_labels = num_labels
        self.max_length = max_length
        self.mixup_alpha = mixup_alpha

    def __call__(self, batch: List[Dict]) -> Dict[str, torch.Tensor]:
        enc = self.tokenizer(
            [b["premise"] for b in batch],
            [b["hypothesis"] for b in batch],
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        )
        labels = torch.tensor([b["label"] for b in batch], dtype=torch.long)
        out = {k: v for k, v in enc.items()}
        out["labels"] = labels
        if self.mixup_alpha > 0 and len(batch) > 1:
            lam = float(np.random.beta(self.mixup_alpha, self.mixup_alpha))
            lam = max(lam, 1.0 - lam)  # ok: MLS309
            onehot = F.one_hot(labels, self.num_labels).float()
            partner = onehot.roll(1, dims=1)  # todoruleid: family 6 (missed)
            out["soft_labels"] = lam * onehot + (1.0 - lam) * partner
            out["mix_lam"] = torch.tensor(lam)
        return out


class PairClassifier(nn.Module):
    def __init__(self, name: str, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = AutoModel.from_pretrained(name, trust_remote_code=True)  # ruleid: MLS106
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.config.hidden_size, num_labels)
        nn.init.trunc_normal_(self.head.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.head.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, input_ids, attention_mask, token_type_ids=None, mix_lam=None):
        if mix_lam is not None:
            emb = self.encoder.get_input_embeddings()(input_ids)
            emb = mix_lam * emb + (1.0 - mix_lam) * emb.roll(1, dims=0)  # ok: MLS309
            mask = torch.maximum(attention_mask, attention_mask.roll(1, dims=0))
            out = self.encoder(inputs_embeds=emb, attention_mask=mask, token_type_ids=token_type_ids)
        else:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.head(self.drop(out.last_hidden_state[:, 0]))


class WeightEMA:
    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].mul_(self.decay).add_(v.float(), alpha=1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def swap_in(self, model: nn.Module) -> Dict[str, torch.Tensor]:
        current = model.state_dict()
        backup = {k: current[k].detach().clone() for k in self.shadow}
        model.load_state_dict({**current, **{k: s.to(current[k].dtype) for k, s in self.shadow.items()}})  # ok: MLS302, MLS303, MLS304, MLS305
        return backup
