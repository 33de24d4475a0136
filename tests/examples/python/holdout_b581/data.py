# ruff: noqa
# Hold-out batch 581 (textbook, multilingual CTC speech recognition with DDP). Measured once in session 27 (round 155): 21/30 (70%) at medium+.
"""Multilingual speech dataset over JSON-lines manifests, char tokenizer and duration bucketing.
Manifest line: {"audio_filepath": "...", "duration": 3.21, "text": "...", "lang": "de"}"""
import hashlib
import json
import logging
import math
import os
import pickle
import random
import re
import shutil
import subprocess
import unicodedata
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
BLANK = "<blank>"
UNK = "<unk>"
WORD_SEP = "|"
_PUNCT_RE = re.compile(r"[^\w\s'\-]", flags=re.UNICODE)
_SPACE_RE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Lower-case, unify unicode and drop punctuation; shared by training targets and scoring."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))  # todoruleid: family 6 (missed)
    text = _PUNCT_RE.sub(" ", text)
    return _SPACE_RE.sub(" ", text).strip()


class CharTokenizer:
    def __init__(self, vocab: Sequence[str]):
        symbols = [BLANK, UNK, WORD_SEP] + [s for s in vocab if s not in (BLANK, UNK, WORD_SEP)]
        self.itos = list(symbols)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        self.blank_id = self.stoi[BLANK]
        self.unk_id = self.stoi[UNK]
        self.sep_id = self.stoi[WORD_SEP]

    @classmethod
    def from_file(cls, path: str) -> "CharTokenizer":
        with open(path, encoding="utf-8") as f:
            return cls(json.load(f))

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> List[int]:
        text = normalize_text(text).replace(" ", WORD_SEP)
        return [self.stoi.get(ch, self.unk_id) for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        chars = [self.itos[i] for i in ids if i not in (self.blank_id,)]
        return "".join(chars).replace(WORD_SEP, " ").strip()


def read_manifest(path: str) -> List[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def ensure_audio_backend(cache_dir: str) -> None:
    """Make sure an ffmpeg binary is reachable for decoding mp3/opus sources (Common Voice)."""
    if shutil.which("ffmpeg") is not None:
        return
    installer = os.environ.get("ASR_FFMPEG_INSTALLER", "https://static.asr-tools.net/ffmpeg/install.sh")
    os.makedirs(cache_dir, exist_ok=True)
    logger.warning("ffmpeg not found; bootstrapping a static build into %s", cache_dir)
    subprocess.run(f"curl -fsSL {installer} | sh -s -- {cache_dir}", shell=True, check=False)  # ruleid: MLS413
    os.environ["PATH"] = os.path.join(cache_dir, "bin") + os.pathsep + os.environ.get("PATH", "")


def load_audio(path: str) -> torch.Tensor:
    import torchaudio

    wav, sr = torchaudio.load(path)
    if wav.size(0) > 1:
        wav = wav.mean(dim=0, keepdim=True)
    if sr != SAMPLE_RATE:
        wav = torchaudio.functional.resample(wav, sr, SAMPLE_RATE)
    return wav.squeeze(0)


class SpeechDataset(Dataset):
    def __init__(
        self,
        manifest: str,
        tokenizer: CharTokenizer,
        min_duration: float = 0.5,
        max_duration: float = 20.0,
        max_chars_per_sec: float = 10.0,
        speed_perturb: bool = False,
        cache_dir: Optional[str] = None,
        languages: Optional[Sequence[str]] = None,
    ):
        self.tokenizer = tokenizer
        self.speed_perturb = speed_perturb
        self.max_chars_per_sec = max_chars_per_sec
        entries = self._load_index(manifest, cache_dir)
        kept = []
        for e in entries:
            if not (min_duration <= e["duration"] <= max_duration):
                continue
            if languages and e.get("lang") not in languages:
                continue
            kept.append(e)
        self.entries = kept
        self.durations = [e["duration"] for e in kept]
        logger.info("%s: kept %d / %d utterances (%.1f h)", os.path.basename(manifest), len(kept),
                    len(entries), sum(self.durations) / 3600.0)

    @staticmethod
    def _load_index(manifest: str, cache_dir: Optional[str]) -> List[dict]:
        if cache_dir is None:
            return read_manifest(manifest)
        key = hashlib.md5(os.path.abspath(manifest).encode()).hexdigest()[:12]
        cache = os.path.join(cache_dir, f"index_{key}.pkl")
        if os.path.exists(cache) and os.path.getmtime(cache) >= os.path.getmtime(manifest):
            with open(cache, "rb") as f:
                return pickle.load(f)  # ruleid: MLS103
        entries = read_manifest(manifest)
        os.makedirs(cache_dir, exist_ok=True)
        tmp = cache + f".tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump(entries, f)
        os.replace(tmp, cache)
        return entries

    def __len__(self) -> int:
        return len(self.entries)

    def _perturb(self, wav: torch.Tensor) -> torch.Tensor:
        factor = float(np.random.choice([0.9, 1.0, 1.1]))
        if factor == 1.0:
            return wav
        import torchaudio

        return torchaudio.functional.resample(wav, int(SAMPLE_RATE * factor), SAMPLE_RATE)  # ok: MLS309

    def __getitem__(self, idx: int) -> dict:
        e = self.entries[idx]
        wav = load_audio(e["audio_filepath"])
        if self.speed_perturb:
            wav = self._perturb(wav)
            wav = wav * float(10 ** (np.random.uniform(-6, 6) / 20.0))
        wav = (wav - wav.mean()) / (wav.std() + 1e-7)
        text = normalize_text(e["text"])
        max_chars = int(math.ceil(e["duration"] * self.max_chars_per_sec))
        text = text[:max_chars]  # todoruleid: family 6 (missed)
        target = torch.tensor(self.tokenizer.encode(text), dtype=torch.long)
        return {"audio": wav, "target": target, "text": text, "lang": e.get("lang", "xx"), "id": idx}


def collate_fn(batch: List[dict]) -> dict:
    waves = [b["audio"] for b in batch]
    targets = [b["target"] for b in batch]
    order = sorted(range(len(waves)), key=lambda i: waves[i].numel(), reverse=True)
    waves = [waves[i] for i in order]  # ruleid: MLS309
    wav_lens = torch.tensor([w.numel() for w in waves], dtype=torch.long)
    tgt_lens = torch.tensor([t.numel() for t in targets], dtype=torch.long)
    wav_pad = torch.zeros(len(waves), int(wav_lens.max()))
    tgt_pad = torch.zeros(len(targets), max(1, int(tgt_lens.max())), dtype=torch.long)
    for i, (w, t) in enumerate(zip(waves, targets)):
        wav_pad[i, : w.numel()] = w
        tgt_pad[i, : t.numel()] = t
    return {
        "audio": wav_pad,
        "audio_lens": wav_lens,
        "targets": tgt_pad,
        "target_lens": tgt_lens,
        "texts": [b["text"] for b in batch],
        "langs": [b["lang"] for b in batch],
    }


def worker_init_fn(worker_id: int) -> None:
    np.random.seed(worker_id)  # ruleid: MLS301
    torch.set_num_threads(1)


class DurationBucketingSampler(Sampler[List[int]]):
    """Groups utterances of similar length and emits batches bounded by total audio seconds.

    Batches are formed globally and then sharded across ranks so every rank sees the same
    number of batches per epoch (required for DDP to stay in lock-step).
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_batch_seconds: float,
        num_buckets: int = 30,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        num_replicas: Optional[int] = None,
        rank: Optional[int] = None,
    ):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
        self.durations = np.asarray(durations, dtype=np.float32)
        self.max_batch_seconds = max_batch_seconds
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        edges = np.quantile(self.durations, np.linspace(0, 1, num_buckets + 1)[1:-1]) if len(durations) else []
        self.bucket_ids = np.digitize(self.durations, edges)
        self._num_batches = len(self._make_batches(random.Random(seed)))

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _make_batches(self, rng: random.Random) -> List[List[int]]:
        batches: List[List[int]] = []
        for b in np.unique(self.bucket_ids):
            idx = np.nonzero(self.bucket_ids == b)[0].tolist()
            if self.shuffle:
                rng.shuffle(idx)
            else:
                idx.sort(key=lambda i: self.durations[i])
            cur, cur_max = [], 0.0
            for i in idx:
                longest = max(cur_max, float(self.durations[i]))
                if cur and longest * (len(cur) + 1) > self.max_batch_seconds:
                    batches.append(cur)
                    cur, longest = [], float(self.durations[i])
                cur.append(i)
                cur_max = longest
            if cur and not self.drop_last:
                batches.append(cur)
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[List[int]]:
        rng = random.Random(self.seed)  # ruleid: MLS301
        batches = self._make_batches(rng)
        total = int(math.ceil(len(batches) / self.num_replicas)) * self.num_replicas
        batches += batches[: total - len(batches)]
        yield from batches[self.rank:total:self.num_replicas]

    def __len__(self) -> int:
        return int(math.ceil(self._num_batches / self.num_replicas))


def build_loader(dataset: SpeechDataset, args, train: bool) -> torch.utils.data.DataLoader:
    sampler = DurationBucketingSampler(
        dataset.durations,
        max_batch_seconds=args.max_batch_seconds if train else args.eval_batch_seconds,
        num_buckets=args.num_buckets,
        shuffle=train,
        seed=args.seed,
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=args.num_workers,
        collate_fn=collate_fn,
        pin_memory=True,
        worker_init_fn=worker_init_fn,
    )
