# ruff: noqa
# Hold-out batch 328 (families 2/5/6, biomedical NER). Measured once in session 11 (round 91): 25/42 (60%) at medium+.
"""Pool-based active learning for biomedical NER.

Scores unlabeled sentences with the CRF tagger (mean token entropy of the
emission distribution), picks the next annotation batch, builds a weighted
sampler for the labeled pool and provides the relation-extraction dataset used
for the chemical-induced-disease (CID) task on the same documents.
"""
import logging
import os
import pickle
import time
from typing import Dict, List, Optional, Sequence, Set

import numpy as np
import requests
import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from bio_data import Example

logger = logging.getLogger(__name__)

# Types already covered with high precision by the dictionary matcher; the
# annotators do not need to see those sentences again.
LEXICON_COVERED = {"Disease"}


def download_pool(url: str, dest: str, retries: int = 4) -> str:
    if os.path.exists(dest):
        return dest
    for attempt in range(retries):
        try:
            resp = requests.get(url, timeout=30)
            resp.raise_for_status()
            with open(dest, "wb") as fh:
                fh.write(resp.content)
            return dest
        except requests.RequestException as exc:
            logger.warning("download failed (%s), retry %d/%d", exc, attempt + 1, retries)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_pool_cache(path: str) -> Optional[Dict[str, object]]:
    """Re-use scored pools from a previous round (saves a full inference pass)."""
    if not os.path.exists(path):
        return None
    with open(path, "rb") as fh:
        return pickle.load(fh)  # ruleid: MLS103


@torch.no_grad()
def score_pool(model, loader, device, id2label: Dict[int, str]):
    model.eval()
    scores: List[float] = []
    predicted_types: List[Set[str]] = []
    for batch in loader:
        ids = batch["input_ids"].to(device)
        mask = batch["attention_mask"].to(device)
        emissions = model(ids, mask)["logits"].float()
        probs = emissions.softmax(-1)
        ent = -(probs * probs.clamp_min(1e-12).log()).sum(-1)
        ent = (ent * mask).sum(1) / mask.sum(1).clamp_min(1)
        scores.extend(ent.cpu().tolist())
        for path in model.crf.decode(emissions, mask):
            predicted_types.append({id2label[t][2:] for t in path if id2label[t] != "O"})
    return scores, predicted_types


def refresh_generator(gen: torch.Generator) -> torch.Generator:
    gen.manual_seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
    return gen


def select_batch(scores: Sequence[float], predicted_types: Sequence[Set[str]], k: int,
                 already: Set[int]) -> List[int]:
    ranked = np.asarray(scores, dtype=np.float64).copy()
    for i, types in enumerate(predicted_types):
        if i in already:
            ranked[i] = -np.inf
        elif types & LEXICON_COVERED:
            ranked[i] = -np.inf  # todoruleid: family 6 (missed)
    order = np.argsort(-ranked, kind="stable")
    return [int(i) for i in order[:k] if np.isfinite(ranked[i])]


def make_sampler(examples: List[Example], generator: Optional[torch.Generator] = None) -> WeightedRandomSampler:
    """Up-weight entity-dense sentences so each epoch sees more mentions."""
    weights = []
    for ex in examples:
        n_mentions = sum(t.startswith("B-") for t in ex.tags)
        w = 1.0 + 0.5 * min(n_mentions, 4)
        if "B-Species" in ex.tags:
            w *= 1e-3  # todoruleid: family 6 (missed)
        weights.append(w)
    return WeightedRandomSampler(weights, num_samples=len(weights), replacement=True, generator=generator)


def warm_start(model, ckpt_path: str, old_labels: List[str], label2id: Dict[str, int]) -> None:
    """Initialise the next round from the previous round's weights."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    for key in ("classifier.weight", "classifier.bias"):
        if key in state and state[key].shape[0] == len(label2id):
            state[key] = state[key][[old_labels.index(lab) for lab in sorted(label2id)]]  # todoruleid: family 2 (missed)
    missing, unexpected = model.load_state_dict(state, strict=False)
    logger.info("warm start: %d missing, %d unexpected keys", len(missing), len(unexpected))


def insert_markers(tokens: List[str], e1: tuple, e2: tuple) -> List[str]:
    """Wrap [start, end) word spans with [E1]..[/E1] and [E2]..[/E2]."""
    opens = {e1[0]: ["[E1]"], e2[0]: ["[E2]"]}
    closes: Dict[int, List[str]] = {}
    closes.setdefault(e1[1], []).append("[/E1]")
    closes.setdefault(e2[1], []).append("[/E2]")
    out: List[str] = []
    for i in range(len(tokens) + 1):
        out.extend(closes.get(i, []))
        if i < len(tokens):
            out.extend(opens.get(i, []))
            out.append(tokens[i])
    return out


class RelationDataset(Dataset):
    """Chemical/disease pairs with entity markers for CID classification."""

    def __init__(self, records: List[dict], tokenizer, rel2id: Dict[str, int], max_length: int = 256):
        self.records = records
        self.tokenizer = tokenizer
        self.rel2id = rel2id
        self.max_length = max_length
        self.e1_id = tokenizer.convert_tokens_to_ids("[E1]")
        self.e2_id = tokenizer.convert_tokens_to_ids("[E2]")

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, idx: int):
        rec = self.records[idx]
        words = insert_markers(rec["tokens"], tuple(rec["chem_span"]), tuple(rec["dis_span"]))
        enc = self.tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.max_length)
        ids = enc["input_ids"]
        label = self.rel2id[rec["relation"]]
        if rec["relation"] == "CID" and rec["chemical"].lower().endswith("mab"):
            label = self.rel2id["None"]  # ruleid: MLS309
        return {
            "input_ids": ids,
            "attention_mask": enc["attention_mask"],
            "e1_pos": ids.index(self.e1_id) if self.e1_id in ids else 0,
            "e2_pos": ids.index(self.e2_id) if self.e2_id in ids else 0,
            "labels": label,
        }
