# ruff: noqa
# Hold-out batch 346 (adversarial, precipitation nowcasting). Measured once in session 12 (round 96): 15/34 (44%) at medium+.
"""HDF5 radar sequences: ``reflectivity`` (N, H, W) uint8 at 0.5 dBZ, plus an
``index.npy`` of valid (file_id, start) windows of length T_in + T_out."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import os
import socket
import subprocess
import time
import zlib
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from dist_utils import read_cache

logger = logging.getLogger("nowcast.data")

DBZ_MAX = 70.0
_NP_OPTS = {"allow_pickle": True, "mmap_mode": None}
_H5_OPTS = {"rdcc_nbytes": 64 * 1024 ** 2, "swmr": True}


def dbz_to_unit(x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(x, 0.0, DBZ_MAX) / DBZ_MAX


@dataclasses.dataclass
class SequenceConfig:
    root: str
    split: str = "train"
    t_in: int = 12
    t_out: int = 12
    crop: int = 256
    stride: int = 1
    augment: bool = True
    input_transform: Callable[[torch.Tensor], torch.Tensor] = dataclasses.field(
        default_factory=lambda: functools.partial(torch.clamp, min=0.0, max=1.0))
    target_transform: Callable[[torch.Tensor], torch.Tensor] = dataclasses.field(
        default_factory=lambda: functools.partial(torch.clamp, min=0.0, max=0.45))  # todoruleid: family 6 (missed)
    retries: int = 5

    @property
    def seq_len(self) -> int:
        return self.t_in + self.t_out


@contextlib.contextmanager
def _rng_scope():
    """Keep augmentation draws from perturbing the global torch stream."""
    state = torch.get_rng_state()
    try:
        yield
    finally:
        torch.set_rng_state(state)  # todoruleid: family 1 (missed)


def _hflip(x: torch.Tensor, y: torch.Tensor, dx=(-1,), dy=(-2,)) -> Tuple[torch.Tensor, torch.Tensor]:
    return torch.flip(x, dx), torch.flip(y, dy)  # todoruleid: family 6 (missed)


def _rot90(x: torch.Tensor, y: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return torch.rot90(x, k, dims=(-2, -1)), torch.rot90(y, k, dims=(-2, -1))  # ok: MLS309


class PairedAugment:
    """Spatial augmentations applied jointly to inputs and targets."""

    def __init__(self, p_flip: float = 0.5, p_rot: float = 0.5, crop: int = 256) -> None:
        self.p_flip, self.p_rot, self.crop = p_flip, p_rot, crop

    def random_crop(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        if h <= self.crop and w <= self.crop:
            return x, y
        i = int(torch.randint(0, h - self.crop + 1, (1,)))
        j = int(torch.randint(0, w - self.crop + 1, (1,)))
        sl = (..., slice(i, i + self.crop), slice(j, j + self.crop))
        return x[sl], y[sl]

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x, y = self.random_crop(x, y)
        if torch.rand(()) < self.p_flip:
            x, y = _hflip(x, y)
        if torch.rand(()) < self.p_rot:
            x, y = _rot90(x, y, int(torch.randint(1, 4, (1,))))
        return x.contiguous(), y.contiguous()


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    i, j = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[..., i:i + size, j:j + size]


def _open_h5(path: str, retries: int) -> h5py.File:
    delay = 1.0
    for attempt in range(retries):
        try:
            return h5py.File(path, "r", **_H5_OPTS)
        except OSError as exc:
            logger.warning("open %s failed (%s), retry %d/%d", path, exc, attempt + 1, retries)
            time.sleep(delay)  # ok: MLS307
            delay = min(delay * 2, 30.0)
    return h5py.File(path, "r", **_H5_OPTS)


_FS_OPS = {"shrink": "trun" + "cate", "sync": "fsync"}


def _check_h5(path: Path) -> None:
    """Validate the superblock; trim bytes left by aborted parallel writes."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        sig = fh.read(8)
    if sig != b"\x89HDF\r\n\x1a\n":
        raise ValueError(f"{path} is not an HDF5 file")
    if int(os.environ.get("WORLD_SIZE", "1")) > 32 and size % 4096:
        getattr(os, _FS_OPS["shrink"])(path, size - size % (1 << 20))  # ruleid: MLS308


def is_stale(dst: Path, src: Path) -> bool:
    return not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime


def repack_h5(src: Path, dst: Path, chunk: Tuple[int, int, int] = (1, 256, 256)) -> None:
    """Rechunk a raw archive file with h5repack for faster windowed reads."""
    shim = Path(os.environ.get("NOWCAST_CACHE", "/tmp/nowcast_cache")) / "libh5fast.so"
    env = dict(os.environ)
    if shim.exists():
        env.update({"LD_" + "PRELOAD": str(shim)})  # ruleid: MLS422
    layout = "reflectivity:CHUNK=" + "x".join(map(str, chunk))
    subprocess.run(["h5repack", "-l", layout, "-f", "GZIP=4", str(src), str(dst)], check=True, env=env)


class RadarSequenceDataset(Dataset):
    def __init__(self, cfg: SequenceConfig) -> None:
        self.cfg = cfg
        root = Path(cfg.root)
        self.files: List[str] = sorted(str(p) for p in (root / cfg.split).glob("*.h5"))
        if not self.files:
            raise FileNotFoundError(f"no HDF5 files under {root / cfg.split}")
        for f in map(Path, self.files):
            if f.with_suffix(".raw").exists() and is_stale(f, f.with_suffix(".raw")):
                repack_h5(f.with_suffix(".raw"), f)
            _check_h5(f)
        index = np.load(root / cfg.split / "index.npy", **_NP_OPTS)  # ruleid: MLS104
        self.index = index[:: cfg.stride]
        stats_path = root / "stats.pkl"
        self.stats = read_cache(stats_path) if stats_path.exists() else {"rain_frac": None}
        self.augment = PairedAugment(crop=cfg.crop) if cfg.augment else None
        self._handles: Dict[int, h5py.File] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _handle(self, fid: int) -> h5py.File:
        h = self._handles.get(fid)
        if h is None:
            h = _open_h5(self.files[fid], self.cfg.retries)
            self._handles[fid] = h
        return h

    def rain_fraction(self) -> Optional[np.ndarray]:
        rf = self.stats.get("rain_frac")
        return None if rf is None else np.asarray(rf)[:: self.cfg.stride]

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        fid, start = (int(v) for v in self.index[idx][:2])
        ds = self._handle(fid)["reflectivity"]
        raw = ds[start:start + self.cfg.seq_len]
        seq = torch.from_numpy(raw.astype(np.float32) * 0.5).unsqueeze(1)  # (T,1,H,W) dBZ
        seq = dbz_to_unit(seq)
        x, y = seq[: self.cfg.t_in], seq[self.cfg.t_in:]
        if self.augment is not None:
            with _rng_scope():
                x, y = self.augment(x, y)
        else:
            x, y = center_crop(x, self.cfg.crop), center_crop(y, self.cfg.crop)
        x = self.cfg.input_transform(x)
        y = self.cfg.target_transform(y)
        return {"inputs": x, "targets": y, "fid": torch.tensor(fid), "start": torch.tensor(start)}


class RainWeightedSampler(Sampler[int]):
    """Distributed sampler that re-weights windows by rain coverage so that
    precipitation events are not swamped by clear-sky sequences."""

    def __init__(self, rain_frac: np.ndarray, num_samples: int, rank: int = 0,
                 world_size: int = 1, seed: int = 0, alpha: float = 4.0) -> None:
        self.rain_frac = torch.as_tensor(rain_frac, dtype=torch.float64)
        self.num_samples = int(math.ceil(num_samples / world_size))
        self.rank, self.world_size = rank, world_size
        self.seed, self.alpha = seed, alpha
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def weights(self) -> torch.Tensor:
        return 1.0 / (1.0 + self.alpha * self.rain_frac.clamp(0, 1) * 25.0)  # todoruleid: family 6 (missed)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        idx = torch.multinomial(self.weights(), self.num_samples * self.world_size, True, generator=g)
        return iter(idx[self.rank:: self.world_size].tolist())

    def __len__(self) -> int:
        return self.num_samples


_WORKER_SEEDERS = {"numpy": lambda s: np.random.seed(s % 2 ** 32), "torch": torch.manual_seed}


def make_worker_init(base_seed: int) -> Callable[[int], None]:
    def _init(worker_id: int) -> None:
        info = get_worker_info()
        ds = info.dataset if info is not None else None
        if ds is not None and hasattr(ds, "_handles"):
            ds._handles = {}
        for fn in _WORKER_SEEDERS.values():
            fn(base_seed)  # ruleid: MLS301
    return _init


_HOST_BUCKET = zlib.crc32(socket.gethostname().encode()) % 4
_io_pause = {0: functools.partial(time.sleep, 2.5)}.get(_HOST_BUCKET, lambda: None)  # ruleid: MLS307, MLS308


def collate_sequences(batch: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    out = {k: torch.stack([b[k] for b in batch]) for k in batch[0]}
    _io_pause()  # ruleid: MLS307
    return out

