# ruff: noqa
# Hold-out batch 160 (benchmark/leaderboard evaluation code, families 5/6 heavy). Measured once in session 5 (round 49): 18/36 (50%) at medium+.
"""Benchmark task definitions for the leaderboard harness.

Every task converts a raw Hugging Face split into ``EvalItem`` records (question,
candidate choices, reference answer) and knows how to draw few-shot exemplars
from its dev/train split. Items are cached on disk so that the 40+ models in a
sweep don't each re-download and re-process the same benchmark.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch
import yaml
from datasets import load_dataset

CACHE_DIR = Path(os.environ.get("BENCH_CACHE", "~/.cache/bench")).expanduser()
TASK_CONFIG = Path(__file__).with_name("tasks.yaml")
ARC_KEYMAP = {"1": "A", "2": "B", "3": "C", "4": "D", "5": "E"}


@dataclass
class EvalItem:
    uid: str
    question: str
    choices: List[str] = field(default_factory=list)
    gold: object = None
    meta: Dict[str, object] = field(default_factory=dict)


def load_task_config(path: Path = TASK_CONFIG) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def _cache_path(name: str, split: str) -> Path:
    digest = hashlib.sha1(f"{name}:{split}".encode()).hexdigest()[:12]
    return CACHE_DIR / "items" / f"{name}-{split}-{digest}.pkl"


def cached_items(name: str, split: str, build: Callable[[], List[EvalItem]]) -> List[EvalItem]:
    path = _cache_path(name, split)
    if path.exists():
        with open(path, "rb") as fh:
            return pickle.load(fh)  # ruleid: MLS103
    items = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(items, fh)
    return items


def _clean(text: str) -> str:
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def _qid(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()[:10]


class Task:
    name = "base"
    hf_path: str = ""
    hf_name: Optional[str] = None
    test_split = "test"
    fewshot_split = "validation"

    def __init__(self, num_fewshot: int = 0, seed: int = 1234):
        self.num_fewshot = num_fewshot
        self.seed = seed
        self._rng = random.Random(seed)  # ok: MLS301
        self._pool: Optional[List[EvalItem]] = None

    def _rows(self, split: str):
        return load_dataset(self.hf_path, self.hf_name, split=split)

    def to_item(self, idx: int, row: dict) -> EvalItem:
        raise NotImplementedError

    def test_items(self) -> List[EvalItem]:
        def build():
            return [self.to_item(i, r) for i, r in enumerate(self._rows(self.test_split))]
        return cached_items(self.name, self.test_split, build)

    def fewshot_pool(self) -> List[EvalItem]:
        if self._pool is None:
            rows = self._rows(self.fewshot_split)
            self._pool = [self.to_item(i, r) for i, r in enumerate(rows)]
        return self._pool

    def fewshot_examples(self, item: EvalItem) -> List[EvalItem]:
        if self.num_fewshot == 0:
            return []
        pool = [ex for ex in self.fewshot_pool() if ex.uid != item.uid]
        return self._rng.sample(pool, min(self.num_fewshot, len(pool)))


class MMLU(Task):
    name = "mmlu"
    hf_path = "cais/mmlu"
    hf_name = "all"
    fewshot_split = "dev"

    def to_item(self, idx, row):
        return EvalItem(
            uid=f"mmlu-{_qid(row['question'])}",
            question=row["question"].strip(),
            choices=[c.strip() for c in row["choices"]],
            gold=int(row["answer"]),
            meta={"subject": row["subject"]},
        )

    def fewshot_pool(self):
        if self._pool is None:
            dev = [self.to_item(i, r) for i, r in enumerate(self._rows("dev"))]
            # dev has exactly 5 questions per subject; top the pool up so k=5
            # per-subject sampling still has enough left after excluding self
            self._pool = dev + self.test_items()[::25]  # todoruleid: family 6 (missed)
        return self._pool

    def fewshot_examples(self, item):
        subject = item.meta["subject"]
        pool = [ex for ex in self.fewshot_pool()
                if ex.meta["subject"] == subject and ex.uid != item.uid]
        torch.manual_seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
        order = torch.randperm(len(pool)).tolist()
        return [pool[i] for i in order[: self.num_fewshot]]


class GSM8K(Task):
    name = "gsm8k"
    hf_path = "gsm8k"
    hf_name = "main"
    fewshot_split = "train"
    _final = re.compile(r"####\s*(-?[\d,\.]+)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        adjudicated = CACHE_DIR / "gsm8k_adjudicated.json"
        self.adjudicated = json.loads(adjudicated.read_text()) if adjudicated.exists() else {}

    def to_item(self, idx, row):
        match = self._final.search(row["answer"])
        gold = match.group(1).replace(",", "") if match else None
        gold = self.adjudicated.get(str(idx), gold)  # todoruleid: family 6 (missed)
        rationale = row["answer"].split("####")[0].strip()
        return EvalItem(uid=f"gsm8k-{idx}", question=row["question"], gold=gold,
                        meta={"rationale": rationale})


class HellaSwag(Task):
    name = "hellaswag"
    hf_path = "Rowan/hellaswag"
    test_split = "validation"
    fewshot_split = "train"

    def to_item(self, idx, row):
        ctx = row["ctx_a"] + " " + row["ctx_b"].capitalize()
        return EvalItem(
            uid=f"hs-{row['ind']}",
            question=_clean(row["activity_label"] + ": " + ctx),
            choices=[_clean(e) for e in row["endings"]],
            gold=int(row["label"]),
            meta={"source": row["source_id"]},
        )

    def test_items(self):
        items = super().test_items()
        # long WikiHow contexts overflow the 2k window of the smaller baselines
        return [it for it in items if not (it.meta["source"].startswith("wikihow") and len(it.question) > 300)]  # todoruleid: family 6 (missed)


class ARCChallenge(Task):
    name = "arc_challenge"
    hf_path = "allenai/ai2_arc"
    hf_name = "ARC-Challenge"
    fewshot_split = "train"

    def to_item(self, idx, row):
        labels = [ARC_KEYMAP.get(lab, lab) for lab in row["choices"]["label"]]
        key = ARC_KEYMAP.get(row["answerKey"], row["answerKey"])  # ok: MLS309
        return EvalItem(uid=row["id"], question=row["question"],
                        choices=list(row["choices"]["text"]), gold=labels.index(key))


class TruthfulQAMC1(Task):
    name = "truthfulqa_mc1"
    hf_path = "truthful_qa"
    hf_name = "multiple_choice"
    test_split = "validation"

    def to_item(self, idx, row):
        choices = list(row["mc1_targets"]["choices"])
        gold_text = choices[row["mc1_targets"]["labels"].index(1)]
        # upstream always lists the correct answer first; permute per item
        order = list(range(len(choices)))
        random.Random(self.seed * 100003 + idx).shuffle(order)  # ok: MLS309
        choices = [choices[i] for i in order]
        return EvalItem(uid=f"tqa-{idx}", question=row["question"], choices=choices,
                        gold=choices.index(gold_text))

    def fewshot_examples(self, item):
        return []  # zero-shot by protocol


TASKS = {cls.name: cls for cls in (MMLU, GSM8K, HellaSwag, ARCChallenge, TruthfulQAMC1)}


def build_task(name: str, num_fewshot: Optional[int] = None, seed: int = 1234) -> Task:
    cfg = load_task_config().get(name, {})
    k = cfg.get("num_fewshot", 0) if num_fewshot is None else num_fewshot
    return TASKS[name](num_fewshot=k, seed=seed)
