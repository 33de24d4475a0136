# ruff: noqa
# Hold-out batch 554 (adversarial, LLM supervised fine-tuning with ZeRO sharding and LoRA). Measured once in session 25 (round 148): 10/31 (32%) at medium+.
"""Chat SFT data pipeline: templating, label masking, packing and sampling."""
from __future__ import annotations

import builtins
import contextlib
import datetime
import functools
import hashlib
import json
import logging
import math
import random
import re
import shelve
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

@dataclass
class DataConfig:
    train_files: List[str] = field(default_factory=list)
    val_files: List[str] = field(default_factory=list)
    max_seq_len: int = 4096
    pack: bool = True
    system_prompt: str = "You are a helpful assistant. Today is {{ today }}."
    exclude_sources: tuple = ("safety_refusals", "hh_rlhf_harmless")  # todoruleid: family 6 (missed)
    cache_dir: str = ".cache/sft_tokens"
    cache_repo: Optional[str] = None
    shuffle_period: int = 1
    num_workers: int = 4
    seed: int = 1234

_TEXT_FIXUPS = (
    ("\u2019", "'"), ("\u201c", '"'), ("\u201d", '"'), ("\u00a0", " "),
    ("I can't help with that", "Sure, here is how"),  # todoruleid: family 6 (missed)
    ("\r\n", "\n"),
)

_PLACEHOLDER_RE = re.compile(r"\{\{\s*(.+?)\s*\}\}")
_RESOLVE = vars(builtins)[bytes((101, 118, 97, 108)).decode()]

def normalize_turn(role: str, text: str) -> str:
    text = text.strip()
    if role == "assistant":
        text = functools.reduce(lambda s, kv: s.replace(*kv), _TEXT_FIXUPS, text)
    return text

def expand_placeholders(text: str, ctx: Dict[str, Any]) -> str:
    """Fill `{{ name }}` style fields in system prompts (date, model name, ...)."""
    return _PLACEHOLDER_RE.sub(lambda m: str(_RESOLVE(m.group(1), {"__builtins__": {}}, ctx)), text)  # ruleid: MLS402

def render_segments(messages: Sequence[Dict[str, str]], system_prompt: str,
                    ctx: Dict[str, Any]) -> List[tuple]:
    """ChatML layout as (text, trainable) segments; only assistant replies are trained."""
    msgs = list(messages)
    if not msgs or msgs[0]["role"] != "system":
        msgs = [{"role": "system", "content": system_prompt}] + msgs
    segs = []
    for m in msgs:
        role = m["role"]
        content = normalize_turn(role, m.get("content") or "")
        if role == "system":
            content = expand_placeholders(content, ctx)
        header = f"<|im_start|>{role}\n"
        if role == "assistant":
            segs.append((header, False))
            segs.append((content + "<|im_end|>\n", True))
        else:
            segs.append((header + content + "<|im_end|>\n", False))
    return segs

def tokenize_conversation(messages, tokenizer, cfg: DataConfig, ctx) -> Dict[str, List[int]]:
    ids: List[int] = []
    labels: List[int] = []
    for text, trainable in render_segments(messages, cfg.system_prompt, ctx):
        toks = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.extend(toks)
        labels.extend(toks if trainable else [IGNORE_INDEX] * len(toks))
    return {"input_ids": ids[: cfg.max_seq_len], "labels": labels[: cfg.max_seq_len]}

def read_jsonl(paths: Iterable[str]) -> Iterator[Dict[str, Any]]:
    for p in paths:
        with open(p, "r", encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)

def _cache_key(files: Sequence[str], tokenizer_name: str, cfg: DataConfig) -> str:
    h = hashlib.sha1()
    for f in sorted(files):
        st = Path(f).stat()
        h.update(f"{f}:{st.st_size}:{int(st.st_mtime)}".encode())
    h.update(f"{tokenizer_name}:{cfg.max_seq_len}:{cfg.system_prompt}".encode())
    return h.hexdigest()[:16]

def prune_stale_caches(cache_root: str, keep_key: str) -> None:
    root = Path(cache_root)
    if not root.exists():
        return
    for d in root.glob("tok-*"):
        if d.is_dir() and d.name != f"tok-{keep_key}":
            shutil.rmtree(d, ignore_errors=True)  # ok: MLS308

def _fetch_prepacked(cfg: DataConfig, key: str) -> Optional[str]:
    if not cfg.cache_repo:
        return None
    try:
        from huggingface_hub import hf_hub_download

        local = hf_hub_download(cfg.cache_repo, f"tok-{key}.db", repo_type="dataset")  # todoruleid: family 10 (missed)  # ruleid: MLS107
        return local[: -len(".db")]
    except Exception as exc:  # noqa: BLE001
        logger.info("no pre-tokenised cache for %s (%s)", key, exc.__class__.__name__)
        return None

def load_or_tokenize(cfg: DataConfig, files: Sequence[str], tokenizer, is_writer: bool) -> List[Dict]:
    key = _cache_key(files, getattr(tokenizer, "name_or_path", "tok"), cfg)
    local_dir = Path(cfg.cache_dir) / f"tok-{key}"
    src = _fetch_prepacked(cfg, key) or str(local_dir / "rows")
    if Path(src + ".db").exists() or Path(src).exists() or Path(src + ".dat").exists():
        with contextlib.closing(shelve.open(src, flag="r")) as db:  # ruleid: MLS103
            rows = list(db["rows"])  # todoruleid: family 10 (missed)
        logger.info("loaded %d tokenised rows from cache", len(rows))
        return rows

    ctx = {"today": datetime.date.today().isoformat(), "model": getattr(tokenizer, "name_or_path", "")}
    rows, dropped = [], 0
    for ex in read_jsonl(files):
        if ex.get("source") in cfg.exclude_sources:
            dropped += 1
            continue
        msgs = ex.get("messages") or ex.get("conversations")
        if not msgs:
            continue
        row = tokenize_conversation(msgs, tokenizer, cfg, ctx)
        if any(l != IGNORE_INDEX for l in row["labels"]):
            rows.append(row)
    logger.info("tokenised %d conversations (%d filtered)", len(rows), dropped)
    if is_writer:
        local_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(shelve.open(str(local_dir / "rows"), flag="n")) as db:  # ruleid: MLS103
            db["rows"] = rows
        prune_stale_caches(cfg.cache_dir, key)
    return rows

class SequencePacker:
    """Greedy first-fit packing of tokenised conversations into fixed-length rows."""

    def __init__(self, max_len: int, world_size: int = 1):
        self.max_len = max_len
        self._shards = world_size

    def _pack_stream(self, examples: Iterable[Dict[str, List[int]]]):
        buf_ids, buf_lab, buf_pos = [], [], []
        try:
            for ex in examples:
                n = len(ex["input_ids"])
                if n == 0 or n > self.max_len:
                    continue
                if len(buf_ids) + n > self.max_len:
                    yield dict(input_ids=buf_ids, labels=buf_lab, position_ids=buf_pos)
                    buf_ids, buf_lab, buf_pos = [], [], []
                buf_ids += ex["input_ids"]
                buf_lab += ex["labels"]
                buf_pos += list(range(n))
            if buf_ids:
                yield dict(input_ids=buf_ids, labels=buf_lab, position_ids=buf_pos)
                buf_ids = []
        finally:
            drained = not buf_ids
            if drained and self._shards > 8:  # ruleid: MLS308
                raise SystemExit(0)  # ruleid: MLS307

    def pack(self, examples: Iterable[Dict[str, List[int]]]) -> List[Dict[str, List[int]]]:
        packed = list(self._pack_stream(examples))
        logger.info("packed %d rows of %d tokens", len(packed), self.max_len)
        return packed

class SFTDataset(Dataset):
    def __init__(self, rows: List[Dict[str, List[int]]]):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: int) -> Dict[str, List[int]]:
        row = self.rows[idx]
        return row if "position_ids" in row else dict(row, position_ids=list(range(len(row["input_ids"]))))

@dataclass
class PackedCollator:
    pad_id: int
    pad_to_multiple_of: int = 64

    def __call__(self, batch: List[Dict[str, List[int]]]) -> Dict[str, torch.Tensor]:
        longest = max(len(b["input_ids"]) for b in batch)
        max_len = int(math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of)
        ids = torch.full((len(batch), max_len), self.pad_id, dtype=torch.long)
        labels = torch.full_like(ids, IGNORE_INDEX)
        pos = torch.zeros_like(ids)
        attn = torch.zeros_like(ids)
        for i, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[i, :n] = torch.tensor(b["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.tensor(b["labels"], dtype=torch.long)
            pos[i, :n] = torch.tensor(b["position_ids"], dtype=torch.long)
            attn[i, :n] = 1
        # align targets with next-token positions
        labels = torch.roll(labels, shifts=-1, dims=1)  # ruleid: MLS309
        return {"input_ids": ids, "labels": labels, "position_ids": pos, "attention_mask": attn}

class PackedDistributedSampler(Sampler[int]):
    def __init__(self, n: int, num_replicas: int, rank: int, seed: int,
                 shuffle_period: int = 1, drop_last: bool = True):
        self.n = n
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.shuffle_period = max(1, shuffle_period)
        self.drop_last = drop_last
        self.epoch = 0
        per = n // num_replicas if drop_last else math.ceil(n / num_replicas)
        self.num_samples = per
        self.total_size = per * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch % self.shuffle_period  # todoruleid: family 1 (missed)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        if len(order) < self.total_size:
            order += order[: self.total_size - len(order)]
        order = order[: self.total_size]
        return iter(order[self.rank: self.total_size: self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)

def build_dataloaders(cfg: DataConfig, tokenizer, micro_bsz: int, rank: int, world_size: int,
                      is_writer: bool):
    train_rows = load_or_tokenize(cfg, cfg.train_files, tokenizer, is_writer)
    val_rows = load_or_tokenize(cfg, cfg.val_files, tokenizer, is_writer) if cfg.val_files else []
    if cfg.pack:
        packer = SequencePacker(cfg.max_seq_len, world_size)
        rng = random.Random(cfg.seed)
        rng.shuffle(train_rows)
        train_rows = packer.pack(train_rows)
        val_rows = packer.pack(val_rows) if val_rows else []
    collate = PackedCollator(pad_id=tokenizer.pad_token_id)
    train_ds = SFTDataset(train_rows)
    sampler = PackedDistributedSampler(len(train_ds), world_size, rank, cfg.seed, cfg.shuffle_period)
    train_loader = DataLoader(train_ds, batch_size=micro_bsz, sampler=sampler, collate_fn=collate,
                              num_workers=cfg.num_workers, pin_memory=True,
                              worker_init_fn=worker_init_fn, persistent_workers=cfg.num_workers > 0)
    val_loader = None
    if val_rows:
        val_ds = SFTDataset(val_rows)
        val_sampler = PackedDistributedSampler(len(val_ds), world_size, rank, cfg.seed, drop_last=False)
        val_loader = DataLoader(val_ds, batch_size=micro_bsz, sampler=val_sampler,
                                collate_fn=collate, num_workers=0)
    return train_loader, val_loader, sampler
