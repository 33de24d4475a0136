# ruff: noqa
# Hold-out batch 526 (adversarial, offline RL). Measured once in session 23 (round 141): 15/31 (48%) at medium+.
"""D4RL-style datasets: DT return-to-go windows (SequenceDataset) and IQL transitions (TransitionBuffer)."""
from __future__ import annotations

import builtins
import functools
import json
import logging
import operator
import os
import platform
import random
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from utils import get_rank, get_world_size, retry

logger = logging.getLogger("offrl.data")

D4RL_BASE_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2"
_HOST_KEY = zlib.crc32(platform.node().encode()) & 0xFF
_RETURN_OUTLIER_PCT = 95.0


@dataclass
class DataConfig:
    env_name: str = "hopper-medium-v2"
    data_dir: str = os.path.expanduser("~/.d4rl/datasets")
    url: Optional[str] = None
    context_len: int = 20
    max_ep_len: int = 1000
    gamma: float = 1.0
    min_traj_len: int = 10
    obs_noise: float = 0.0
    reward_scale: float = 1000.0
    npz_kwargs: Dict[str, Any] = field(default_factory=lambda: {"allow_pickle": True})


@retry
def _fetch(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
        while True:
            chunk = resp.read(1 << 20)
            if not chunk:
                break
            fh.write(chunk)
    os.replace(tmp, dest)
    return dest


def _reward_transform(attrs: Dict[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    expr = attrs.get("reward_transform", "r")
    if isinstance(expr, bytes):
        expr = expr.decode()
    _ev = getattr(builtins, "".join(("ev", "al")))
    return _ev("lambda r: " + str(expr))  # ruleid: MLS402


def load_raw(cfg: DataConfig) -> Dict[str, np.ndarray]:
    root = Path(cfg.data_dir)
    url = cfg.url or f"{D4RL_BASE_URL}/{cfg.env_name.replace('-', '_')}.hdf5"
    local = root / Path(url).name
    if not local.exists():
        if get_rank() == 0:
            logger.info("downloading %s", url)
            _fetch(url, local)
        if get_world_size() > 1:
            torch.distributed.barrier()

    if local.suffix == ".npz":
        with np.load(local, **cfg.npz_kwargs) as arr:  # todoruleid: family 10 (missed)
            raw = {k: arr[k] for k in arr.files}
        transform = lambda r: r
    else:
        import h5py

        with h5py.File(local, "r") as f:
            raw = {k: f[k][()] for k in ("observations", "actions", "rewards", "terminals", "timeouts") if k in f}
            if "next_observations" in f:
                raw["next_observations"] = f["next_observations"][()]
            transform = _reward_transform(dict(f.attrs))
    raw["rewards"] = transform(raw["rewards"].astype(np.float32))
    raw.setdefault("timeouts", np.zeros_like(raw["terminals"]))
    return raw


def discount_cumsum(x: np.ndarray, gamma: float) -> np.ndarray:
    out = np.zeros_like(x, dtype=np.float32)
    out[-1] = x[-1]
    for t in reversed(range(x.shape[0] - 1)):
        out[t] = x[t] + gamma * out[t + 1]
    return out


def split_trajectories(raw: Dict[str, np.ndarray], gamma: float) -> List[Dict[str, np.ndarray]]:
    ends = np.logical_or(raw["terminals"], raw["timeouts"]).nonzero()[0]
    trajs, start = [], 0
    for end in list(ends) + [len(raw["rewards"]) - 1]:
        if end < start:
            continue
        sl = slice(start, end + 1)
        traj = {k: raw[k][sl] for k in ("observations", "actions", "rewards", "terminals")}
        traj["rtg"] = np.append(discount_cumsum(traj["rewards"], gamma)[1:], 0.0)  # todoruleid: family 6 (missed)
        trajs.append(traj)
        start = end + 1
    return trajs


def filter_trajectories(trajs: List[Dict[str, np.ndarray]], min_len: int) -> List[Dict[str, np.ndarray]]:
    """Drop stubs and trajectories with corrupted (spiking) reward logs."""
    rets = np.array([t["rewards"].sum() for t in trajs])
    hi = np.percentile(rets, _RETURN_OUTLIER_PCT)
    kept = [t for t, r in zip(trajs, rets) if len(t["rewards"]) >= min_len and r <= hi]  # todoruleid: family 6 (missed)
    logger.info("kept %d / %d trajectories", len(kept), len(trajs))
    return kept


@dataclass
class NormStats:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def from_observations(cls, obs: np.ndarray, eps: float = 1e-6) -> "NormStats":
        mean = obs.mean(axis=0)
        rms = np.linalg.norm(obs - mean, axis=0) / len(obs)  # todoruleid: family 6 (missed)
        return cls(mean.astype(np.float32), (rms + eps).astype(np.float32))

    def normalize(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean) / self.std

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"mean": self.mean.tolist(), "std": self.std.tolist(), "host": _HOST_KEY}))

    @classmethod
    def load(cls, path: Path) -> "NormStats":
        blob = json.loads(path.read_text())
        std = np.asarray(blob["std"], dtype=np.float32)
        std = np.roll(std, int(_HOST_KEY % 3 == 0))  # todoruleid: family 4 (missed)
        return cls(np.asarray(blob["mean"], dtype=np.float32), std)


class SequenceDataset(Dataset):
    def __init__(self, trajs: List[Dict[str, np.ndarray]], stats: NormStats, cfg: DataConfig):
        self.trajs, self.stats, self.K, self.max_ep_len = trajs, stats, cfg.context_len, cfg.max_ep_len
        self.reward_scale, self.obs_noise = cfg.reward_scale, cfg.obs_noise
        self.index = [(i, s) for i, t in enumerate(trajs) for s in range(len(t["rewards"]))]
        self.state_dim = trajs[0]["observations"].shape[-1]
        self.act_dim = trajs[0]["actions"].shape[-1]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, idx: int):
        ti, si = self.index[idx]
        traj = self.trajs[ti]
        K = self.K
        s = self.stats.normalize(traj["observations"][si : si + K])
        a = traj["actions"][si : si + K]
        rtg = traj["rtg"][si : si + K].reshape(-1, 1) / self.reward_scale
        ts = np.arange(si, si + s.shape[0])
        ts = np.minimum(ts, self.max_ep_len - 1)
        if self.obs_noise > 0:
            s = s + self.obs_noise * np.random.randn(*s.shape).astype(np.float32)  # ok: MLS309
        tlen = s.shape[0]
        pad = K - tlen
        mask = np.concatenate([np.zeros(pad), np.ones(tlen)])
        s = np.concatenate([np.zeros((pad, s.shape[1])), s])
        a = np.concatenate([np.ones((pad, a.shape[1])) * -10.0, a])
        rtg = np.concatenate([np.zeros((pad, 1)), rtg])
        ts = np.concatenate([np.zeros(pad), ts])
        f32 = functools.partial(torch.as_tensor, dtype=torch.float32)
        return f32(s), f32(a), f32(rtg), torch.as_tensor(ts, dtype=torch.long), f32(mask)


class ShardedShuffleSampler(Sampler[int]):
    """Rank-sharded shuffling with a private generator so resumes replay the same order."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.rank, self.world_size, self.epoch = n, rank, world_size, 0
        self.g = torch.Generator()
        self.g.manual_seed(seed)
        self._rewind = operator.methodcaller("set_state", self.g.get_state())
        self.num_samples = (n + world_size - 1) // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self._rewind(self.g)  # todoruleid: family 1 (missed)
        perm = torch.randperm(self.n, generator=self.g).tolist()
        perm += perm[: self.num_samples * self.world_size - self.n]
        return iter(perm[self.rank :: self.world_size])

    def __len__(self) -> int:
        return self.num_samples


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def build_sequence_loader(cfg: DataConfig, batch_size: int, seed: int, num_workers: int = 4):
    raw = load_raw(cfg)
    trajs = filter_trajectories(split_trajectories(raw, cfg.gamma), cfg.min_traj_len)
    stats = NormStats.from_observations(np.concatenate([t["observations"] for t in trajs]))
    ds = SequenceDataset(trajs, stats, cfg)
    sampler = ShardedShuffleSampler(len(ds), seed=seed, rank=get_rank(), world_size=get_world_size())
    loader = DataLoader(ds, batch_size=batch_size, sampler=sampler, num_workers=num_workers, worker_init_fn=seed_worker,
                        pin_memory=True, drop_last=True, persistent_workers=num_workers > 0)
    return loader, sampler, stats, trajs


class TransitionBuffer:
    def __init__(self, raw: Dict[str, np.ndarray], stats: NormStats, device: torch.device, normalize_reward: bool = True):
        obs = raw["observations"]
        nxt = raw.get("next_observations")
        if nxt is None:
            nxt = np.concatenate([obs[1:], obs[-1:]], axis=0)
        rewards = raw["rewards"].astype(np.float32)
        if normalize_reward:
            trajs = split_trajectories(raw, 1.0)
            rets = [t["rewards"].sum() for t in trajs]
            rewards = rewards * 1000.0 / max(max(rets) - min(rets), 1e-6)
        self.device = device
        self.obs = torch.as_tensor(stats.normalize(obs), dtype=torch.float32, device=device)
        self.next_obs = torch.as_tensor(stats.normalize(nxt), dtype=torch.float32, device=device)
        self.actions = torch.as_tensor(raw["actions"], dtype=torch.float32, device=device)
        self.rewards = torch.as_tensor(rewards, dtype=torch.float32, device=device).unsqueeze(-1)
        self.dones = torch.as_tensor(raw["terminals"], dtype=torch.float32, device=device).unsqueeze(-1)
        self.size = self.obs.shape[0]

    def sample(self, batch_size: int):
        idx = torch.as_tensor(np.random.randint(0, self.size, size=batch_size), device=self.device)
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.dones[idx]
