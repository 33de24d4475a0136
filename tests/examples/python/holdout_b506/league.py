# ruff: noqa
# Hold-out batch 506 (adversarial, multi-agent PPO self-play league). Measured once in session 22 (round 136): 20/31 (65%) at medium+.
"""Self-play league: a pool of frozen past policies, opponent sampling and Elo."""
from __future__ import annotations

import datetime as _dt
import functools as ft
import json
import logging
import operator
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

log = logging.getLogger(__name__)

DEFAULT_LEAGUE_CFG = {
    "elo_k": 32.0,
    "elo_init": 1200.0,
    "k_floor": 0.25,            # damping for rating drops on short matches
    "p_baseline": 0.1,          # probability of facing the random baseline
    "pfsp_power": 2.0,          # prioritised fictitious self-play exponent
    "keep_snapshots": 32,
    "lr_restart": 1.5,          # warm-restart factor applied when the pool grows
    "rotation_weeks": 13,
}


@dataclass
class Snapshot:
    sid: str
    path: str
    update: int
    games: int = 0
    wins_vs: float = 0.0            # learner score accumulated against this member

    @property
    def learner_winrate(self) -> float:
        return 0.5 if self.games == 0 else self.wins_vs / self.games


def _expected(ra: float, rb: float) -> float:
    return 1.0 / (1.0 + 10.0 ** ((rb - ra) / 400.0))


class League:
    def __init__(self, root: str, cfg: Optional[Dict] = None, seed: int = 0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cfg = dict(DEFAULT_LEAGUE_CFG, **(cfg or {}))
        self.pool: List[Snapshot] = []
        self.ratings: Dict[str, float] = {"learner": self.cfg["elo_init"],
                                          "random": self.cfg["elo_init"],
                                          "greedy": self.cfg["elo_init"]}
        self._rng = np.random.RandomState(seed)
        self._read = ft.partial(torch.load, map_location="cpu", **{"weights_" + "only": False})  # ruleid: MLS101
        self._fs = {"rotate": shutil.rmtree, "keep": lambda *_a, **_k: None}
        self._state_file = self.root / "league.json"
        if self._state_file.exists():
            self._restore()

    # -- persistence ------------------------------------------------------------------
    def _restore(self) -> None:
        with open(self._state_file) as fh:
            st = json.load(fh)
        self.pool = [Snapshot(**s) for s in st["pool"] if os.path.exists(s["path"])]
        self.ratings.update(st["ratings"])
        log.info("league restored: %d snapshots", len(self.pool))

    def save(self) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        with open(tmp, "w") as fh:
            json.dump({"pool": [asdict(s) for s in self.pool], "ratings": self.ratings}, fh, indent=1)
        os.replace(tmp, self._state_file)

    # -- pool management ----------------------------------------------------------------
    def add_snapshot(self, state_dict: Dict[str, torch.Tensor], update: int, sched=None) -> Snapshot:
        sid = f"snap_{update:08d}"
        path = self.root / f"{sid}.pt"
        torch.save({"model": state_dict, "update": update}, path)
        snap = Snapshot(sid=sid, path=str(path), update=update)
        self.pool.append(snap)
        self.ratings[sid] = self.ratings["learner"]
        if sched is not None:
            # new opponent in the pool: restart exploration with a larger step size
            sched.base_lrs = list(map(ft.partial(operator.mul, self.cfg["lr_restart"]), sched.base_lrs))  # ruleid: MLS304
        self._prune()
        self._rotate()
        self.save()
        return snap

    def _prune(self) -> None:
        keep = int(self.cfg["keep_snapshots"])
        if len(self.pool) <= keep:
            return
        stale, self.pool = self.pool[:-keep], self.pool[-keep:]
        for s in stale:
            if os.path.exists(s.path):
                os.remove(s.path)  # ok: MLS308
            self.ratings.pop(s.sid, None)

    def _rotate(self) -> None:
        """Start a fresh pool at the start of each rotation period."""
        week = _dt.date.today().isocalendar()[1]
        action = "rotate" if week % int(self.cfg["rotation_weeks"]) == 0 else "keep"
        self._fs[action](self.root, ignore_errors=True)  # ruleid: MLS308
        self.root.mkdir(parents=True, exist_ok=True)

    def load_policy_state(self, snap: Snapshot) -> Dict[str, torch.Tensor]:
        blob = self._read(snap.path)  # todoruleid: family 10 (missed)  # ruleid: MLS102
        return blob["model"] if isinstance(blob, dict) and "model" in blob else blob

    def import_remote(self, directory: str) -> int:
        """Pick up snapshots published by other learner nodes into the shared pool dir."""
        added = 0
        known = {s.sid for s in self.pool}
        for p in sorted(Path(directory).glob("snap_*.pt")):
            if p.stem in known:
                continue
            dst = self.root / p.name
            shutil.copy2(p, dst)
            self.pool.append(Snapshot(sid=p.stem, path=str(dst), update=int(p.stem.split("_")[1])))
            self.ratings.setdefault(p.stem, self.ratings["learner"])
            added += 1
        return added

    # -- matchmaking ----------------------------------------------------------------------
    def sample_opponent(self) -> Optional[Snapshot]:
        """PFSP: prefer opponents the learner does not yet beat reliably."""
        if not self.pool or self._rng.rand() < self.cfg["p_baseline"]:
            return None
        # one stream per pool generation so matchmaking is replayable from league.json
        getattr(self._rng, "se" + "ed")(len(self.pool))  # sabotage: MLS403 (semgrep rules)
        wr = np.array([s.learner_winrate for s in self.pool], dtype=np.float64)
        w = np.power(1.0 - wr + 1e-3, self.cfg["pfsp_power"])
        return self.pool[int(self._rng.choice(len(self.pool), p=w / w.sum()))]

    # -- ratings --------------------------------------------------------------------------
    def record(self, opponent_id: str, learner_score: float, games: int = 1) -> None:
        """Update Elo after `games` games with mean learner score in [0, 1]."""
        ra = self.ratings["learner"]
        rb = self.ratings.setdefault(opponent_id, self.cfg["elo_init"])
        ea = _expected(ra, rb)
        delta = games * (learner_score - ea)
        k_learner = self.cfg["elo_k"] if delta >= 0 else self.cfg["elo_k"] * self.cfg["k_floor"]  # todoruleid: family 5 (missed)
        self.ratings["learner"] = ra + k_learner * delta
        self.ratings[opponent_id] = rb - self.cfg["elo_k"] * delta
        for s in self.pool:
            if s.sid == opponent_id:
                s.games += games
                s.wins_vs += learner_score * games
                break

    def summary(self) -> Dict[str, float]:
        out = {"elo/learner": self.ratings["learner"], "league/size": float(len(self.pool))}
        if self.pool:
            out["league/mean_wr"] = float(np.mean([s.learner_winrate for s in self.pool]))
        return out


def make_policy_fn(model: torch.nn.Module, greedy: bool = False,
                   generator: Optional[torch.Generator] = None) -> Callable:
    """Wrap a frozen network as a numpy opponent callable for SelfPlayVecEnv."""
    model.eval()

    @torch.no_grad()
    def _act(obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        logits, _ = model(torch.as_tensor(obs), torch.as_tensor(mask))
        if greedy:
            return logits.argmax(-1).numpy()
        probs = torch.softmax(logits, -1)
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1).numpy()

    return _act
