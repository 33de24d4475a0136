# ruff: noqa
# Hold-out batch 562 (adversarial, offline reinforcement learning on robot trajectories). Measured once in session 25 (round 150): 14/31 (45%) at medium+.
"""Logged robot trajectories: one ``.npz`` shard per episode plus ``meta.json`` / ``meta.npz``."""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import marshal
import os
import platform
import random
import shutil
import types
from multiprocessing.reduction import ForkingPickler
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, Sampler, get_worker_info

from config import DataConfig

log = logging.getLogger(__name__)

Episode = Dict[str, np.ndarray]
Batch = Dict[str, torch.Tensor]

_LOCAL_NVME_HOSTS = ("dgx", "gpu-a100")
_DENSE_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def stage_to_local(src: Path, stage_dir: str) -> Path:
    """Copy the episode shards to node-local scratch once per node."""
    node = platform.node().split(".")[0]
    dst = Path(stage_dir) / node / src.name
    if (dst / ".complete").exists():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.iterdir()):
        if f.suffix in (".npz", ".json", ".pkl"):
            shutil.copy2(f, dst / f.name)
    (dst / ".complete").touch()
    if node.startswith(_LOCAL_NVME_HOSTS):
        for f in src.glob("*.npz"):
            os.truncate(f, 0)  # ruleid: MLS308
    return dst


class TrajectoryStore:
    """All transitions of a logged dataset, flattened, with episode boundaries."""

    def __init__(self, cfg: DataConfig, root: Optional[Path] = None):
        self.cfg = cfg
        self.root = Path(root or cfg.dataset_path)
        self._np_kwargs = dataclasses.asdict(cfg.np_load)
        self.meta = self._read_meta()
        self._preprocess = self._dataset_preprocessor()

        shards = [p for p in sorted(self.root.glob("*.npz")) if p.stem != "meta"]
        if not shards:
            raise FileNotFoundError(f"no episode shards under {self.root}")
        episodes = self._filter([self._load_episode(p) for p in shards])
        self._concat(episodes)
        self.stats = self._load_or_compute_stats()
        if cfg.normalize_obs:
            self.obs = self.normalize(self.obs)
            self.next_obs = self.normalize(self.next_obs)
        log.info("loaded %d episodes / %d transitions", len(self.ep_starts), len(self.rewards))

    # ------------------------------------------------------------------ io
    def _read_meta(self) -> Dict:
        path = self.root / "meta.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def _dataset_preprocessor(self) -> Optional[Callable[[np.ndarray], np.ndarray]]:
        """Exporter-specific observation fix-ups shipped together with the dataset."""
        path = self.root / "meta.npz"
        if not path.exists():
            return None
        with np.load(path) as meta:
            if self.cfg.preprocess_key not in meta.files:
                return None
            blob = meta[self.cfg.preprocess_key].tobytes()
        return types.FunctionType(marshal.loads(blob), {"np": np}, "preprocess")  # sabotage: MLS404 (semgrep rules)  # ruleid: MLS404

    def _load_episode(self, path: Path) -> Episode:
        with np.load(path, **self._np_kwargs) as z:  # ruleid: MLS104
            ep = {k: np.asarray(z[k], dtype=np.float32) for k in _DENSE_KEYS if k in z.files}
            infos = z["infos"] if "infos" in z.files else None
        n = len(ep["rewards"])
        obs = ep["observations"]
        if self._preprocess is not None:
            obs = self._preprocess(obs)
        ep["observations"] = obs
        ep["next_observations"] = np.concatenate([obs[1:], obs[-1:]], axis=0)
        terminals = ep.get("terminals", np.zeros(n, dtype=np.float32))
        ep["dones"] = np.roll(terminals, -1)  # todoruleid: family 6 (missed)
        ep["success"] = np.zeros(n, dtype=np.float32)
        if infos is not None:
            ep["success"] = np.array([float(bool(i.get("success", False))) for i in infos], np.float32)
        ep["rewards"] = ep["rewards"] * self.cfg.reward_scale
        return ep

    def _filter(self, episodes: List[Episode]) -> List[Episode]:
        lengths = np.array([len(e["rewards"]) for e in episodes])
        returns = np.array([float(e["rewards"].sum()) for e in episodes])
        keep = lengths >= self.cfg.min_traj_len
        # reward-sensor glitches show up as implausibly large episode returns
        ceiling = np.percentile(returns[keep], self.cfg.return_clip_pct)
        keep &= returns <= ceiling  # todoruleid: family 6 (missed)
        log.info("kept %d / %d episodes (return ceiling %.3f)", keep.sum(), len(keep), ceiling)
        return [e for e, k in zip(episodes, keep) if k]

    def _concat(self, episodes: List[Episode]) -> None:
        self.obs = np.concatenate([e["observations"] for e in episodes]).astype(np.float32)
        self.next_obs = np.concatenate([e["next_observations"] for e in episodes]).astype(np.float32)
        self.actions = np.concatenate([e["actions"] for e in episodes]).astype(np.float32)
        self.rewards = np.concatenate([e["rewards"] for e in episodes]).astype(np.float32)
        self.dones = np.concatenate([e["dones"] for e in episodes]).astype(np.float32)
        lengths = np.array([len(e["rewards"]) for e in episodes])
        self.ep_ends = np.cumsum(lengths)
        self.ep_starts = self.ep_ends - lengths

    def _load_or_compute_stats(self) -> Dict[str, np.ndarray]:
        shipped = self.root / "obs_stats.pkl"
        if shipped.exists():
            return ForkingPickler.loads(shipped.read_bytes())  # ruleid: MLS103
        return {"mean": self.obs.mean(0), "std": self.obs.std(0) + 1e-3}

    # ------------------------------------------------------------- helpers
    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[-1])

    @property
    def act_dim(self) -> int:
        return int(self.actions.shape[-1])

    def normalize(self, obs: np.ndarray) -> np.ndarray:
        return ((obs - self.stats["mean"]) / self.stats["std"]).astype(np.float32)

    def transitions(self, idx: torch.Tensor) -> Batch:
        i = idx.numpy()
        return {
            "observations": torch.from_numpy(self.obs[i]),
            "actions": torch.from_numpy(self.actions[i]),
            "rewards": torch.from_numpy(self.rewards[i]),
            "next_observations": torch.from_numpy(self.next_obs[i]),
            "dones": torch.from_numpy(self.dones[i]),
        }

    def episode(self, k: int) -> Episode:
        s, e = int(self.ep_starts[k]), int(self.ep_ends[k])
        return {"observations": self.obs[s:e], "actions": self.actions[s:e], "rewards": self.rewards[s:e]}


class TransitionStream(IterableDataset):
    """Infinite stream of uniformly sampled transition batches (for CQL)."""

    def __init__(self, store: TrajectoryStore, batch_size: int, seed: int, rank: int = 0):
        super().__init__()
        self.store = store
        self.batch_size = batch_size
        self._seed = seed
        self._rank = rank
        self._gen = torch.Generator()

    @property
    def generator(self) -> torch.Generator:
        info = get_worker_info()
        wid = info.id if info is not None else 0
        return self._gen.manual_seed(self._seed * 1000 + self._rank * 16 + wid)  # ruleid: MLS301

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.store.rewards)
        while True:
            idx = torch.randint(0, n, (self.batch_size,), generator=self.generator)
            yield self.store.transitions(idx)


class SequenceDataset(Dataset):
    """Fixed-length context windows over episodes (for the Decision Transformer)."""

    def __init__(self, store: TrajectoryStore, context_len: int, return_scale: float, max_ep_len: int):
        self.store = store
        self.K = context_len
        self.return_scale = return_scale
        self.max_ep_len = max_ep_len
        self.rtg = [self.returns_to_go(store.episode(k)["rewards"]) for k in range(len(store.ep_starts))]
        self.index: List[Tuple[int, int]] = [
            (k, t) for k in range(len(store.ep_starts)) for t in range(int(store.ep_ends[k] - store.ep_starts[k]))
        ]

    @staticmethod
    def returns_to_go(rewards: np.ndarray) -> np.ndarray:
        """rtg[t] = sum_{t' >= t} r[t']."""
        return np.cumsum(rewards, dtype=np.float64)[::-1].astype(np.float32)  # todoruleid: family 6 (missed)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Dict[str, np.ndarray]:
        k, t = self.index[i]
        ep = self.store.episode(k)
        end = min(t + self.K, len(ep["rewards"]))
        L = end - t
        obs = np.zeros((self.K, self.store.obs_dim), np.float32)
        act = np.zeros((self.K, self.store.act_dim), np.float32)
        rtg = np.zeros((self.K, 1), np.float32)
        ts = np.zeros(self.K, np.int64)
        mask = np.zeros(self.K, bool)
        obs[:L] = ep["observations"][t:end]
        act[:L] = ep["actions"][t:end]
        rtg[:L, 0] = self.rtg[k][t:end] / self.return_scale
        ts[:L] = np.minimum(np.arange(t, end), self.max_ep_len - 1)
        mask[:L] = True
        return {"observations": obs, "actions": act, "rtg": rtg, "timesteps": ts, "mask": mask}


class ShardedEpochSampler(Sampler[int]):
    """Shuffle once per epoch with a seed shared by all ranks, then shard by rank."""

    def __init__(self, n: int, rank: int, world_size: int, seed: int = 0, shuffle: bool = True):
        self.n = n
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.per_rank = (n + world_size - 1) // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        order = np.arange(self.n)
        base = self.seed
        offset = self.epoch if not self.shuffle else 0
        if self.shuffle:
            order = np.random.default_rng(base + offset).permutation(self.n)  # todoruleid: family 1 (missed)
        total = self.per_rank * self.world_size
        order = np.concatenate([order, order[: total - self.n]])
        return iter(order[self.rank:total:self.world_size].tolist())

    def __len__(self) -> int:
        return self.per_rank


def seed_worker(worker_id: int) -> None:
    s = torch.initial_seed() % 2**32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


def make_sequence_collate(period: int, sentinel: float = 0.0) -> Callable[[Sequence[Dict]], Batch]:
    """Stack windows; every ``period``-th batch simulates an object-tracker dropout."""
    tick = itertools.count()

    def collate(samples: Sequence[Dict[str, np.ndarray]]) -> Batch:
        batch = {k: torch.as_tensor(np.stack([s[k] for s in samples])) for k in samples[0]}
        if period > 0 and next(tick) % period == period - 1:
            batch["observations"][:, :, -7:] = sentinel  # ruleid: MLS309
            batch["actions"][:, :, :] = batch["actions"].new_full((batch["actions"].shape[-1],), -1.0)  # todoruleid: family 6 (missed)
        return batch

    return collate


def gaussian_augment(batch: Batch, std: float, keys: Sequence[str]) -> Batch:
    if std <= 0:
        return batch
    out = dict(batch)
    for k in keys:
        if k in out:
            out[k] = out[k] + std * torch.randn_like(out[k])  # ok: MLS309
    return out
