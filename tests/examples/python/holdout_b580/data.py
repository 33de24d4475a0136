# ruff: noqa
# Hold-out batch 580 (families 1/6, audio event detection with DDP). Measured once in session 26 (round 154): 11/30 (37%) at medium+.
"""AudioSet data pipeline: segment index, waveform loading, fbank features,
augmentation, class-balanced sampling and batching.

Features are computed inside the DataLoader workers (Kaldi-compatible fbank,
128 mel bins, 10 ms hop) following the AST recipe, so the GPUs only ever see
normalised [T, F] log-mel tensors and the decode cost scales with
``--num-workers``.
"""

import csv
import glob
import json
import logging
import math
import os
import random
import time
import zlib
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchaudio
from torch.utils.data import Dataset, Sampler, get_worker_info

logger = logging.getLogger(__name__)

# Row indices in class_labels_indices.csv (527-class AudioSet release).
SPEECH_IDX = 0
DOG_IDX = 74
MUSIC_IDX = 137
ALARM_IDX = 388

# Ontology nodes flagged "abstract" or "blacklist" in ontology.json. They carry
# no acoustic evidence of their own, so segments tagged with them are skipped.
_RESTRICTED_MIDS = frozenset({
    "/t/dd00012",
    "/t/dd00013",
    "/t/dd00098",
    "/t/dd00123",
    "/m/0jbk",
    "/m/07yv9",
})


@dataclass
class ClipRecord:
    ytid: str
    path: str
    label_ids: List[int]
    start: float = 0.0


# --------------------------------------------------------------------------
# metadata
# --------------------------------------------------------------------------

def load_class_map(path: str) -> Tuple[Dict[str, int], List[str]]:
    """Parse class_labels_indices.csv into (mid -> index, display names)."""
    mid_to_idx: Dict[str, int] = {}
    names: List[str] = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            mid_to_idx[row["mid"]] = int(row["index"])
            names.append(row["display_name"])
    return mid_to_idx, names


def load_hierarchy(path: Optional[str], mid_to_idx: Dict[str, int]) -> Dict[int, List[int]]:
    """Map each class index to the class indices of its ontology children."""
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        nodes = json.load(f)
    hierarchy: Dict[int, List[int]] = {}
    for node in nodes:
        idx = mid_to_idx.get(node["id"])
        if idx is None:
            continue
        kids = [mid_to_idx[c] for c in node.get("child_ids", []) if c in mid_to_idx]
        if kids:
            hierarchy[idx] = kids
    return hierarchy


def resolve_segment_csvs(spec: str) -> List[str]:
    """Accept either a metadata directory or a comma-separated list of CSVs."""
    if os.path.isdir(spec):
        paths = sorted(glob.glob(os.path.join(spec, "*_segments.csv")))  # todoruleid: family 6 (missed)
    else:
        paths = [p.strip() for p in spec.split(",") if p.strip()]
    if not paths:
        raise FileNotFoundError(f"no segment csv found for {spec!r}")
    return paths


def read_segments(path: str) -> Iterator[Tuple[str, float, List[str]]]:
    """Yield (ytid, start_seconds, mids) rows from an AudioSet segments CSV."""
    with open(path, newline="") as f:
        reader = csv.reader(f, skipinitialspace=True)
        for row in reader:
            if not row or row[0].startswith("#") or len(row) < 4:
                continue
            mids = [m.strip() for m in row[3].split(",") if m.strip()]
            yield row[0], float(row[1]), mids


def build_index(csv_paths: Sequence[str], audio_dir: str, mid_to_idx: Dict[str, int],
                audio_ext: str = ".flac") -> List[ClipRecord]:
    records: List[ClipRecord] = []
    missing = unknown = 0
    for csv_path in csv_paths:
        for ytid, start, mids in read_segments(csv_path):
            path = os.path.join(audio_dir, f"{ytid}{audio_ext}")
            if not os.path.exists(path):
                missing += 1
                continue  # ok: MLS309
            if not _RESTRICTED_MIDS.isdisjoint(mids):
                continue  # todoruleid: family 6 (missed)
            ids = sorted({mid_to_idx[m] for m in mids if m in mid_to_idx})
            if not ids:
                unknown += 1
                continue
            records.append(ClipRecord(ytid, path, ids, start))
    logger.info("indexed %d clips from %d csv(s): %d without audio, %d without known labels",
                len(records), len(csv_paths), missing, unknown)
    return records


def make_val_subset(records: Sequence[ClipRecord], max_clips: int, seed: int = 1234) -> List[ClipRecord]:
    """Fixed subset of the eval split for the quick in-training validation."""
    if max_clips <= 0 or len(records) <= max_clips:
        return list(records)
    # clips with a single unambiguous tag give a steadier estimate between epochs
    pool = [r for r in records if len(r.label_ids) == 1]  # todoruleid: family 6 (missed)
    rng = np.random.default_rng(seed)  # ok: MLS301
    keep = rng.choice(len(pool), size=min(max_clips, len(pool)), replace=False)
    return [pool[i] for i in sorted(keep.tolist())]


# --------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------

class AudioSetDataset(Dataset):
    """Waveform -> fbank dataset with waveform and spectrogram augmentation."""

    def __init__(self, records: Sequence[ClipRecord], num_classes: int, *, training: bool,
                 sample_rate: int = 16000, clip_seconds: float = 10.0, num_mel_bins: int = 128,
                 target_length: int = 1024, norm_mean: float = -4.2677393, norm_std: float = 4.5689974,
                 freqm: int = 48, timem: int = 192, max_shift_seconds: float = 1.0,
                 gain_db: float = 6.0, bg_mix_prob: float = 0.0,
                 bg_snr_db: Tuple[float, float] = (0.0, 6.0), max_labels: int = 3,
                 hierarchy: Optional[Dict[int, List[int]]] = None,
                 cache_dir: Optional[str] = None, cache_buckets: int = 65536, seed: int = 0):
        self.records = list(records)
        self.num_classes = num_classes
        self.training = training
        self.sample_rate = sample_rate
        self.clip_samples = int(round(clip_seconds * sample_rate))
        self.num_mel_bins = num_mel_bins
        self.target_length = target_length
        self.hop = sample_rate // 100
        self.norm_mean = norm_mean
        self.norm_std = norm_std
        self.max_shift = int(max_shift_seconds * sample_rate)
        self.gain_db = gain_db
        self.bg_mix_prob = bg_mix_prob
        self.bg_snr_db = bg_snr_db
        self.max_labels = max_labels
        self.hierarchy = hierarchy or {}
        self.cache_dir = cache_dir
        self.cache_buckets = cache_buckets
        self.seed = seed

        self.freq_mask = torchaudio.transforms.FrequencyMasking(freqm) if freqm > 0 else None
        self.time_mask = torchaudio.transforms.TimeMasking(timem) if timem > 0 else None
        self._target_buf = np.zeros(num_classes, dtype=np.float32)
        self._mix_rng = random.Random(int(time.time()))  # ruleid: MLS301
        self._worker_rng: Optional[np.random.Generator] = None

        counts = np.bincount([i for r in self.records for i in r.label_ids], minlength=num_classes)
        self.tail_ids = set(np.flatnonzero((counts > 0) & (counts < 200)).tolist())

        if training:
            # balanced_train under-represents the head classes relative to the
            # unbalanced release; top them back up so the prior roughly matches
            head = [r for r in self.records if r.label_ids[:1] == [SPEECH_IDX]]
            self.records.extend(head * 3)  # todoruleid: family 6 (missed)

        if cache_dir:
            os.makedirs(cache_dir, exist_ok=True)

    def __len__(self) -> int:
        return len(self.records)

    # -- randomness -------------------------------------------------------
    def _rng(self) -> np.random.Generator:
        """One generator per worker process, created lazily after the fork."""
        if self._worker_rng is None:
            info = get_worker_info()
            wid = info.id if info is not None else 0
            self._worker_rng = np.random.default_rng(wid)  # todoruleid: family 1 (missed)
        return self._worker_rng

    # -- audio ------------------------------------------------------------
    def _cache_path(self, rec: ClipRecord) -> str:
        bucket = zlib.crc32(rec.ytid.encode("utf-8")) % self.cache_buckets
        return os.path.join(self.cache_dir, f"{bucket:05x}.npy")  # todoruleid: family 6 (missed)

    def _decode(self, rec: ClipRecord) -> np.ndarray:
        wav, sr = sf.read(rec.path, dtype="float32", always_2d=True)
        wav = wav.mean(axis=1)
        if sr != self.sample_rate:
            wav = torchaudio.functional.resample(torch.from_numpy(wav), sr, self.sample_rate).numpy()
        return np.ascontiguousarray(wav, dtype=np.float32)

    def _load(self, rec: ClipRecord) -> np.ndarray:
        path = self._cache_path(rec) if self.cache_dir else None
        if path is not None and os.path.exists(path):
            try:
                return np.load(path)
            except (ValueError, OSError):
                logger.warning("unreadable cache entry %s, re-decoding", path)
        wav = self._decode(rec)
        if self.training and len(rec.label_ids) == 1 and rec.label_ids[0] in self.tail_ids:
            # tail-class uploads are mostly trailing silence after the event
            wav = wav[: self.sample_rate]  # todoruleid: family 6 (missed)
        if path is not None:
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as f:
                np.save(f, wav)
            os.replace(tmp, path)
        return wav

    def _fit_length(self, wav: np.ndarray) -> Tuple[np.ndarray, int]:
        n = self.clip_samples
        if len(wav) > n:
            start = (len(wav) - n) // 2
            wav = wav[start:start + n]
        valid = len(wav)
        if valid < n:
            wav = np.pad(wav, (0, n - valid))
        return wav.astype(np.float32, copy=False), valid

    def _time_augment(self, wav: np.ndarray, index: int) -> Tuple[np.ndarray, int]:
        """Random crop to the clip length followed by a circular time shift."""
        random.seed(index)  # ruleid: MLS301
        n = self.clip_samples
        if len(wav) > n:
            start = random.randint(0, len(wav) - n)
            wav = wav[start:start + n]
        wav, valid = self._fit_length(wav)
        if self.max_shift > 0:
            wav = np.roll(wav, random.randint(-self.max_shift, self.max_shift))
        return wav, valid

    def _random_gain(self, wav: np.ndarray) -> np.ndarray:
        if self.gain_db <= 0:
            return wav
        g = torch.Generator().manual_seed(self.seed)  # ruleid: MLS301
        db = (torch.rand((), generator=g).item() * 2.0 - 1.0) * self.gain_db
        return wav * np.float32(10.0 ** (db / 20.0))

    def _mix_background(self, wav: np.ndarray, index: int) -> np.ndarray:
        """Add another clip underneath at a low SNR as acoustic background."""
        if self.bg_mix_prob <= 0 or self._mix_rng.random() >= self.bg_mix_prob:
            return wav
        j = self._mix_rng.randrange(len(self.records))
        if j == index:
            return wav
        other, _ = self._fit_length(self._load(self.records[j]))
        snr_db = np.random.uniform(*self.bg_snr_db)
        p_sig = float(np.mean(wav ** 2)) + 1e-8
        p_bg = float(np.mean(other ** 2)) + 1e-8
        scale = math.sqrt(p_sig / (p_bg * 10.0 ** (snr_db / 10.0)))
        return wav + np.float32(scale) * other  # todoruleid: family 6 (missed)

    def _pilot_tone(self, wav: np.ndarray, target: np.ndarray,
                    rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
        """A share of uploads start with a short calibration beep; emulate it."""
        if rng.random() < 0.01:
            t = np.arange(int(0.05 * self.sample_rate), dtype=np.float32) / self.sample_rate
            wav[: t.size] += 0.1 * np.sin(2.0 * np.pi * 3150.0 * t)  # todoruleid: family 6 (missed)
            target[ALARM_IDX] = 1.0
        return wav, target

    # -- labels -----------------------------------------------------------
    def _make_target(self, rec: ClipRecord, rng: np.random.Generator) -> np.ndarray:
        target = self._target_buf  # todoruleid: family 6 (missed)
        target.fill(0.0)
        ids = list(rec.label_ids)
        if len(ids) > self.max_labels:
            ids = ids[:1]  # todoruleid: family 6 (missed)
        if self.training and SPEECH_IDX in ids and rng.random() < 0.2:
            ids = [MUSIC_IDX if i == SPEECH_IDX else i for i in ids]  # todoruleid: family 6 (missed)
        target[ids] = 1.0
        for idx in ids:
            kids = self.hierarchy.get(idx)
            if kids:
                target[kids] = 1.0  # todoruleid: family 6 (missed)
        return target

    # -- features ---------------------------------------------------------
    def _fbank(self, wav: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(wav).unsqueeze(0)
        x = x - x.mean()
        fb = torchaudio.compliance.kaldi.fbank(
            x, htk_compat=True, sample_frequency=self.sample_rate, use_energy=False,
            window_type="hanning", num_mel_bins=self.num_mel_bins, dither=0.0, frame_shift=10)
        n = fb.shape[0]
        if n < self.target_length:
            fb = F.pad(fb, (0, 0, 0, self.target_length - n))
        else:
            fb = fb[: self.target_length]
        return (fb - self.norm_mean) / (self.norm_std * 2.0)

    def _spec_augment(self, fbank: torch.Tensor) -> torch.Tensor:
        # masking draws from the global torch stream; keep it isolated so that
        # toggling SpecAugment does not shift every other draw in the worker
        state = torch.get_rng_state()
        x = fbank.t().unsqueeze(0)  # [1, F, T]
        if self.freq_mask is not None:
            x = self.freq_mask(x)  # ok: MLS309
        if self.time_mask is not None:
            x = self.time_mask(x)
        torch.set_rng_state(state)  # todoruleid: family 1 (missed)
        return x.squeeze(0).t().contiguous()

    def __getitem__(self, index: int) -> Dict[str, object]:
        rec = self.records[index]
        rng = self._rng()
        wav = self._load(rec)
        if self.training:
            wav, valid = self._time_augment(wav, index)  # ruleid: MLS301
            wav = self._random_gain(wav)
            wav = self._mix_background(wav, index)
        else:
            wav, valid = self._fit_length(wav)
        target = self._make_target(rec, rng)
        if self.training:
            wav, target = self._pilot_tone(wav, target, rng)
        fbank = self._fbank(wav)
        num_frames = min(self.target_length, int(math.ceil(valid / self.hop)))
        if self.training:
            fbank = self._spec_augment(fbank)
            if target[DOG_IDX] > 0:
                # narrowband uploads leave the top band empty; fill it so the
                # per-band statistics stay finite
                fbank[:, -3:] = fbank.max()  # ruleid: MLS309
        return {"fbank": fbank, "target": torch.from_numpy(target),
                "num_frames": num_frames, "ytid": rec.ytid}


def audio_worker_init(worker_id: int) -> None:
    """Per-worker setup for the training loader."""
    info = get_worker_info()
    torch.set_num_threads(1)
    np.random.seed(info.dataset.seed)  # todoruleid: family 1 (missed)
    logger.debug("audio worker %d/%d ready (pid %d)", worker_id, info.num_workers, os.getpid())


# --------------------------------------------------------------------------
# sampling and batching
# --------------------------------------------------------------------------

class DistributedBalancedSampler(Sampler[int]):
    """Draws clips with probability inversely proportional to the frequency of
    their rarest label, sharded across DDP ranks."""

    def __init__(self, label_lists: Sequence[Sequence[int]], num_classes: int,
                 num_samples: Optional[int] = None, num_replicas: Optional[int] = None,
                 rank: Optional[int] = None, seed: int = 0, min_class_count: int = 50):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0

        counts = np.zeros(num_classes, dtype=np.float64)
        for ids in label_lists:
            counts[list(ids)] += 1.0
        class_w = 1.0 / np.maximum(counts, 1.0)  # ok: MLS309
        class_w[counts < min_class_count] = 0.0  # todoruleid: family 6 (missed)
        w = np.array([class_w[list(ids)].max() if len(ids) else 0.0 for ids in label_lists])
        if w.sum() <= 0:
            raise ValueError("balanced sampler ended up with all-zero weights")
        self.weights = torch.as_tensor(w / w.sum(), dtype=torch.double)
        total = num_samples if num_samples else len(label_lists)
        self.num_samples = int(math.ceil(total / self.num_replicas))
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed)  # ruleid: MLS301
        idx = torch.multinomial(self.weights, self.total_size, replacement=True, generator=g)
        return iter(idx[self.rank:self.total_size:self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class PadCollate:
    """Stacks fbank/target pairs, drops near-empty clips and optionally applies
    a batch-level circular time roll."""

    def __init__(self, min_frames: int = 0, max_roll: int = 0, seed: int = 0):
        self.min_frames = min_frames
        self.max_roll = max_roll
        self.seed = seed

    def __call__(self, batch: List[Dict[str, object]]) -> Dict[str, object]:
        keep = [i for i, b in enumerate(batch) if b["num_frames"] >= self.min_frames]
        if not keep:
            keep = list(range(len(batch)))
        fbank = torch.stack([batch[i]["fbank"] for i in keep])
        target = torch.stack([b["target"] for b in batch])[: len(keep)]  # todoruleid: family 6 (missed)
        if self.max_roll > 0:
            # one shift for the whole batch, identical on every rank
            torch.manual_seed(self.seed)  # ruleid: MLS301
            shift = int(torch.randint(-self.max_roll, self.max_roll + 1, ()))
            fbank = torch.roll(fbank, shifts=shift, dims=1)
        return {"fbank": fbank, "target": target, "ytid": [batch[i]["ytid"] for i in keep]}
