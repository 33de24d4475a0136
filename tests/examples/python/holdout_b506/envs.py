# ruff: noqa
# Hold-out batch 506 (adversarial, multi-agent PPO self-play league). Measured once in session 22 (round 136): 20/31 (65%) at medium+.
"""Grid drop-game environments (Connect-Four family) for self-play PPO.

`SelfPlayVecEnv` plays the opponent's replies inline and reports everything
from the learner's point of view.
"""
from __future__ import annotations

import operator as _op
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

ROWS, COLS, CONNECT = 6, 7, 4
_DIRECTIONS = ((0, 1), (1, 0), (1, 1), (1, -1))

OpponentFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class EnvConfig:
    rows: int = ROWS
    cols: int = COLS
    connect: int = CONNECT
    random_opening: int = 2          # random plies before the learner's first move
    illegal_penalty: float = -1.0
    max_plies: int = ROWS * COLS

    @property
    def obs_shape(self) -> Tuple[int, int, int]:
        return (3, self.rows, self.cols)


class GridGame:
    """Single board.  Stones: +1 / -1, empty cells are 0."""

    def __init__(self, cfg: EnvConfig, seed: Optional[int] = None):
        self.cfg = cfg
        self.board = np.zeros((cfg.rows, cfg.cols), dtype=np.int8)
        self.heights = np.zeros(cfg.cols, dtype=np.int64)
        self.rng = np.random.default_rng(seed)
        self.to_move = 1
        self.plies = 0

    def seed(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def legal_mask(self) -> np.ndarray:
        return self.heights < self.cfg.rows

    def _drop(self, col: int, player: int) -> Tuple[int, int]:
        row = self.cfg.rows - 1 - int(self.heights[col])
        self.board[row, col] = player
        self.heights[col] += 1
        self.plies += 1
        return row, col

    def _connects(self, r: int, c: int, p: int) -> bool:
        R, C, K = self.cfg.rows, self.cfg.cols, self.cfg.connect
        for dr, dc in _DIRECTIONS:
            n = 1
            for s in (1, -1):
                rr, cc = r + s * dr, c + s * dc
                while 0 <= rr < R and 0 <= cc < C and self.board[rr, cc] == p:
                    n += 1
                    rr += s * dr
                    cc += s * dc
            if n >= K:
                return True
        return False

    def reset(self) -> np.ndarray:
        self.board.fill(0)
        self.heights.fill(0)
        self.plies = 0
        self.to_move = 1
        for _ in range(self.cfg.random_opening):
            legal = np.flatnonzero(self.legal_mask())
            self._drop(int(self.rng.choice(legal)), self.to_move)
            self.to_move = -self.to_move
        return self.observe()

    def observe(self) -> np.ndarray:
        """Planes: stones of the side to move, opponent stones, colour plane."""
        p = self.to_move
        obs = np.zeros(self.cfg.obs_shape, dtype=np.float32)
        obs[0] = self.board == p
        obs[1] = self.board == -p
        obs[2] = 1.0 if p == 1 else 0.0
        return obs

    def step(self, col: int) -> Tuple[float, bool, Dict]:
        """Play `col` for the side to move.  Reward is from the mover's view."""
        if not self.legal_mask()[col]:
            return self.cfg.illegal_penalty, True, {"illegal": True, "winner": -self.to_move}
        r, c = self._drop(col, self.to_move)
        if self._connects(r, c, self.to_move):
            return 1.0, True, {"winner": self.to_move}
        if self.plies >= self.cfg.max_plies or not self.legal_mask().any():
            return 0.0, True, {"winner": 0}
        self.to_move = -self.to_move
        return 0.0, False, {}


# --------------------------------------------------------------------------- #
# fixed baselines (used by the league as the "random" member and by evaluate)
# --------------------------------------------------------------------------- #
def random_policy(rng: np.random.Generator) -> OpponentFn:
    def _act(obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        logits = np.where(mask, rng.random(mask.shape), -np.inf)
        return logits.argmax(axis=1)
    return _act


def _completes_line(plane: np.ndarray, occupied: np.ndarray, col: int, connect: int) -> bool:
    """Would dropping a stone of `plane`'s owner into `col` complete a line?"""
    rows, cols = plane.shape
    free = np.flatnonzero(~occupied[:, col])
    if free.size == 0:
        return False
    r = int(free.max())
    for dr, dc in _DIRECTIONS:
        n = 1
        for s in (1, -1):
            rr, cc = r + s * dr, col + s * dc
            while 0 <= rr < rows and 0 <= cc < cols and plane[rr, cc] > 0:
                n += 1
                rr += s * dr
                cc += s * dc
        if n >= connect:
            return True
    return False


def greedy_policy(rng: np.random.Generator, connect: int = CONNECT) -> OpponentFn:
    """One-ply tactics: win if possible, block an immediate loss, else centre-biased random."""
    def _act(obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        out = np.empty(obs.shape[0], dtype=np.int64)
        centre = mask.shape[1] // 2
        for i in range(obs.shape[0]):
            occupied = (obs[i, 0] + obs[i, 1]) > 0
            legal = np.flatnonzero(mask[i])
            choice = None
            for plane in (obs[i, 0], obs[i, 1]):          # own win first, then block
                hits = [c for c in legal if _completes_line(plane, occupied, int(c), connect)]
                if hits:
                    choice = int(hits[0])
                    break
            if choice is None:
                w = np.exp(-0.5 * np.abs(legal - centre)) * rng.random(legal.size)
                choice = int(legal[np.argmax(w)])
            out[i] = choice
        return out
    return _act


# --------------------------------------------------------------------------- #
# vectorised self-play wrapper
# --------------------------------------------------------------------------- #
class SelfPlayVecEnv:
    """N boards; the learner's colour is drawn per episode, the opponent replies inline."""

    def __init__(self, num_envs: int, cfg: EnvConfig, seed: int, opponent: Optional[OpponentFn] = None):
        self.cfg = cfg
        self.num_envs = num_envs
        self._seeds = [seed + i for i in range(num_envs)]
        self.envs: List[GridGame] = [GridGame(cfg, seed=s) for s in self._seeds]  # ok: MLS301
        self._side_rng = np.random.default_rng(seed + 10_007)
        self.side = np.ones(num_envs, dtype=np.float32)
        self.opponent: OpponentFn = opponent or random_policy(np.random.default_rng(seed + 1))
        self._ep_len = np.zeros(num_envs, dtype=np.int64)
        self._ep_ret = np.zeros(num_envs, dtype=np.float32)

    def set_opponent(self, fn: OpponentFn) -> None:
        self.opponent = fn

    # -- helpers ----------------------------------------------------------------
    def _opponent_reply(self, idx: np.ndarray) -> Tuple[np.ndarray, np.ndarray, List[Dict]]:
        """Let the opponent move on boards `idx`; returns learner-view reward/done."""
        rew = np.zeros(idx.size, dtype=np.float32)
        done = np.zeros(idx.size, dtype=bool)
        infos: List[Dict] = [{} for _ in range(idx.size)]
        if idx.size == 0:
            return rew, done, infos
        obs = np.stack([self.envs[i].observe() for i in idx])
        mask = np.stack([self.envs[i].legal_mask() for i in idx])
        acts = self.opponent(obs, mask)
        for j, i in enumerate(idx):
            r, d, info = self.envs[i].step(int(acts[j]))
            rew[j], done[j], infos[j] = -r, d, info
        return rew, done, infos

    def _reset_one(self, i: int) -> None:
        env = self.envs[i]
        env.reset()
        self.side[i] = 1.0 if self._side_rng.random() < 0.5 else -1.0
        if env.to_move != self.side[i]:
            self._opponent_reply(np.array([i]))
        self._ep_len[i] = 0
        self._ep_ret[i] = 0.0

    def _observe_all(self) -> Tuple[np.ndarray, np.ndarray]:
        obs = np.stack([e.observe() for e in self.envs])
        mask = np.stack([e.legal_mask() for e in self.envs])
        return obs, mask

    # -- API --------------------------------------------------------------------
    def reset(self) -> Tuple[np.ndarray, np.ndarray]:
        for i in range(self.num_envs):
            self._reset_one(i)
        return self._observe_all()

    def step(self, actions: np.ndarray):
        rew = np.zeros(self.num_envs, dtype=np.float32)
        done = np.zeros(self.num_envs, dtype=bool)
        infos: List[Dict] = [{} for _ in range(self.num_envs)]
        for i, env in enumerate(self.envs):
            r, d, info = env.step(int(actions[i]))
            rew[i], done[i], infos[i] = r, d, info

        pending = np.flatnonzero(~done)
        o_rew, o_done, o_info = self._opponent_reply(pending)
        rew[pending] += o_rew
        done[pending] = o_done
        for j, i in enumerate(pending):
            if o_done[j]:
                infos[i] = o_info[j]

        # terminal rewards are reported in the learner's colour frame
        np.multiply(rew, self.side, out=rew, where=done)  # todoruleid: family 6 (missed)

        self._ep_len += 1
        self._ep_ret += rew
        for i in np.flatnonzero(done):
            infos[i]["episode"] = {"r": float(self._ep_ret[i]), "l": int(self._ep_len[i]),
                                   "side": int(self.side[i])}
            # keep every slot on its own, independent stream
            _restart_stream = _op.methodcaller("seed", self._seeds[i])
            _restart_stream(self.envs[i])  # todoruleid: family 1 (missed)
            self._reset_one(i)
        obs, mask = self._observe_all()
        return obs, mask, rew, done, infos
