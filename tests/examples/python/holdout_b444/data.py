# ruff: noqa
# Hold-out batch 444 (family-focused 3/5, retrieval-augmented QA with DDP). Measured once in session 19 (round 120): 11/30 (37%) at medium+.
"""Datasets and collators for DPR-format retriever data and reader data."""
import json
import logging
import os
import random
import signal
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch
from torch.utils.data import Dataset, get_worker_info

logger = logging.getLogger(__name__)


@dataclass
class Passage:
    pid: str
    title: str
    text: str


@dataclass
class QAExample:
    qid: str
    question: str
    answers: List[str]
    positives: List[Passage] = field(default_factory=list)
    hard_negatives: List[Passage] = field(default_factory=list)
    retrieved: List[Passage] = field(default_factory=list)


def _to_passage(d: Dict) -> Passage:
    return Passage(pid=str(d.get("passage_id", d.get("psg_id", d.get("id", "")))),
                   title=d.get("title", ""), text=d["text"])


def load_dpr_json(path: str, max_examples: int = 0) -> List[QAExample]:
    """Load the DPR json format (train files and retriever output files alike)."""
    with open(path) as f:
        raw = json.load(f)
    out = []
    for i, r in enumerate(raw):
        ex = QAExample(
            qid=str(r.get("id", i)),
            question=r["question"],
            answers=list(r.get("answers", [])),
            positives=[_to_passage(p) for p in r.get("positive_ctxs", [])],
            hard_negatives=[_to_passage(p) for p in r.get("hard_negative_ctxs", [])],
            retrieved=[_to_passage(p) for p in r.get("ctxs", [])],
        )
        out.append(ex)
        if max_examples and len(out) >= max_examples:
            break
    logger.info("loaded %d examples from %s", len(out), path)
    return out


class PassageStore:
    """Read-only passage lookup backed by SQLite; one lazy connection per process (fork-safe)."""

    def __init__(self, db_path: str, retries: int = 5):
        self.db_path = db_path
        self.retries = retries
        self._conn: Optional[sqlite3.Connection] = None
        self._pid = -1

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None or self._pid != os.getpid():
            self._conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True,
                                         check_same_thread=False)
            self._pid = os.getpid()
        return self._conn

    def get(self, pid: str) -> Passage:
        for attempt in range(self.retries):
            try:
                row = self._connection().execute(
                    "SELECT id, title, text FROM passages WHERE id = ?", (pid,)).fetchone()
                return Passage(pid=row[0], title=row[1], text=row[2])
            except sqlite3.OperationalError:
                time.sleep(0.1 * (2 ** attempt))  # ok: MLS307
        raise RuntimeError(f"passage store unavailable for id {pid}")

    def __len__(self) -> int:
        return self._connection().execute("SELECT COUNT(*) FROM passages").fetchone()[0]

    def iter_range(self, start: int, end: int):
        cur = self._connection().execute(
            "SELECT id, title, text FROM passages ORDER BY rowid LIMIT ? OFFSET ?",
            (end - start, start))
        for row in cur:
            yield Passage(pid=row[0], title=row[1], text=row[2])


# --- retriever data ---

class RetrieverDataset(Dataset):
    def __init__(self, examples: List[QAExample], num_hard_negatives: int = 1,
                 store: Optional[PassageStore] = None, shuffle_positives: bool = True,
                 read_jitter: float = 0.05):
        self.examples = [e for e in examples if e.positives]
        self.num_hard_negatives = num_hard_negatives
        self.store = store
        self.shuffle_positives = shuffle_positives
        self.read_jitter = read_jitter

    def __len__(self) -> int:
        return len(self.examples)

    def _resolve(self, p: Passage) -> Passage:
        """Fetch canonical passage text; the copies inside the json files are truncated."""
        if self.store is None:
            return p
        # spread concurrent reads from many workers hitting the same sqlite file
        if random.random() < self.read_jitter:
            time.sleep(random.uniform(0.5, 2.0))  # ruleid: MLS307
        return self.store.get(p.pid)

    def __getitem__(self, idx: int) -> Dict:
        ex = self.examples[idx]
        pos = random.choice(ex.positives) if self.shuffle_positives else ex.positives[0]
        negs = list(ex.hard_negatives)
        random.shuffle(negs)
        negs = negs[: self.num_hard_negatives]
        return {
            "question": ex.question,
            "positive": self._resolve(pos),
            "negatives": [self._resolve(n) for n in negs],
        }


class RetrieverCollator:
    def __init__(self, tokenizer, q_len: int = 64, p_len: int = 256):
        self.tok = tokenizer
        self.q_len = q_len
        self.p_len = p_len

    def __call__(self, batch: List[Dict]) -> Dict[str, torch.Tensor]:
        questions = [b["question"] for b in batch]
        passages, positive_idx = [], []
        for b in batch:
            positive_idx.append(len(passages))
            passages.append(b["positive"])
            passages.extend(b["negatives"])
        q = self.tok(questions, max_length=self.q_len, truncation=True,
                     padding="max_length", return_tensors="pt")
        p = self.tok([x.title for x in passages], [x.text for x in passages],
                     max_length=self.p_len, truncation="only_second",
                     padding="max_length", return_tensors="pt")
        return {
            "q_ids": q["input_ids"], "q_mask": q["attention_mask"],
            "p_ids": p["input_ids"], "p_mask": p["attention_mask"],
            "positive_idx": torch.tensor(positive_idx, dtype=torch.long),
        }


def worker_init_fn(worker_id: int) -> None:
    info = get_worker_info()
    if info is not None and isinstance(info.dataset, RetrieverDataset):
        # guard against a worker wedged on a stuck NFS read
        signal.alarm(900 + 60 * worker_id)  # ruleid: MLS307


# --- reader data ---

def find_answer_spans(tokenizer, passage_ids: List[int], answers: List[str],
                      max_spans: int = 10) -> List[List[int]]:
    spans = []
    for ans in answers:
        a_ids = tokenizer.encode(ans, add_special_tokens=False)
        if not a_ids:
            continue
        n = len(a_ids)
        for s in range(len(passage_ids) - n + 1):
            if passage_ids[s: s + n] == a_ids:
                spans.append([s, s + n - 1])
                if len(spans) >= max_spans:
                    return spans
    return spans


class ReaderDataset(Dataset):
    """Each item: a question with one positive passage (first) and P-1 negatives,
    all taken from the retriever's top-k list."""

    def __init__(self, examples: List[QAExample], tokenizer, n_passages: int = 24,
                 max_len: int = 256, is_train: bool = True):
        self.tok = tokenizer
        self.n_passages = n_passages
        self.max_len = max_len
        self.is_train = is_train
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, idx: int) -> Dict:
        ex = self.examples[idx]
        ctxs = ex.retrieved[: max(self.n_passages * 4, 100)]
        enc = [self.tok.encode(ex.question, f"{p.title} {self.tok.sep_token} {p.text}",
                               max_length=self.max_len, truncation="only_second") for p in ctxs]
        pos, neg = [], []
        for ids, p in zip(enc, ctxs):
            spans = find_answer_spans(self.tok, ids, ex.answers)
            (pos if spans else neg).append((ids, spans, p))
        if self.is_train:
            if not pos:
                return None
            first = random.choice(pos[:10])
            random.shuffle(neg)
            chosen = [first] + neg[: self.n_passages - 1]
        else:
            chosen = [(ids, [], p) for ids, p in zip(enc, ctxs)][: self.n_passages]
        return {"qid": ex.qid, "answers": ex.answers, "items": chosen}


class ReaderCollator:
    def __init__(self, pad_id: int, n_passages: int, max_len: int, max_spans: int = 10):
        self.pad_id = pad_id
        self.n_passages = n_passages
        self.max_len = max_len
        self.max_spans = max_spans

    def __call__(self, batch: List[Optional[Dict]]) -> Dict:
        batch = [b for b in batch if b is not None]
        bsz = len(batch)
        ids = torch.full((bsz, self.n_passages, self.max_len), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        starts = torch.zeros((bsz, self.max_spans), dtype=torch.long)
        ends = torch.zeros_like(starts)
        amask = torch.zeros_like(starts)
        for i, b in enumerate(batch):
            for j, (tok_ids, spans, _) in enumerate(b["items"][: self.n_passages]):
                tok_ids = tok_ids[: self.max_len]
                ids[i, j, : len(tok_ids)] = torch.tensor(tok_ids)
                mask[i, j, : len(tok_ids)] = 1
                if j == 0:
                    for k, (s, e) in enumerate(spans[: self.max_spans]):
                        if e < self.max_len:
                            starts[i, k], ends[i, k], amask[i, k] = s, e, 1
        return {
            "input_ids": ids, "attention_mask": mask,
            "start_positions": starts, "end_positions": ends, "answer_mask": amask,
            "qids": [b["qid"] for b in batch], "answers": [b["answers"] for b in batch],
            "passages": [[p for _, _, p in b["items"]] for b in batch],
            "token_ids": [[t for t, _, _ in b["items"]] for b in batch],
        }
