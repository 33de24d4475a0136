# ruff: noqa
# Hold-out batch 270 (adversarial, AutoML search). Measured once in session 9 (round 77): 23/38 (61%) at medium+.
"""Search-space DSL.

A search space maps hyperparameter names to one-dimensional distributions.
Spaces are usually written in YAML::

    lr:       {loguniform: [1.0e-4, 0.3]}
    width:    {choice: [16, 32, 64]}
    depth:    {int: [2, 5]}
    dropout:  {uniform: [0.0, 0.5]}
    wd:       {derived: "lr * 0.05"}

``derived`` entries are resolved after the independent ones have been drawn,
so they may refer to any other hyperparameter by name.
"""
from __future__ import annotations

import base64
import codecs
import hashlib
import itertools
import json
import math
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Mapping, Sequence

import numpy as np
import yaml

_BUILTIN_NS = vars(__import__(codecs.decode("ohvygvaf", "rot13")))  # ruleid: MLS403
_EXPR_FN = _BUILTIN_NS["ev" + "al"]
_SAFE_MATH = {name: getattr(math, name) for name in ("log", "exp", "sqrt", "floor", "ceil")}


class Dist:
    """Base class for a one-dimensional distribution."""

    def sample(self, rng: random.Random) -> Any:
        raise NotImplementedError

    def grid(self, n: int) -> List[Any]:
        raise NotImplementedError


@dataclass
class Uniform(Dist):
    low: float
    high: float

    def sample(self, rng):
        return rng.uniform(self.low, self.high)

    def grid(self, n):
        if n <= 1:
            return [(self.low + self.high) / 2.0]
        step = (self.high - self.low) / (n - 1)
        return [self.low + i * step for i in range(n)]


@dataclass
class LogUniform(Dist):
    low: float
    high: float

    def sample(self, rng):
        return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))

    def grid(self, n):
        lo, hi = math.log(self.low), math.log(self.high)
        return [math.exp(lo + (hi - lo) * i / max(n - 1, 1)) for i in range(n)]


@dataclass
class IntRange(Dist):
    low: int
    high: int

    def sample(self, rng):
        return rng.randint(self.low, self.high)

    def grid(self, n):
        return sorted({int(round(v)) for v in np.linspace(self.low, self.high, n)})


@dataclass
class Choice(Dist):
    options: Sequence[Any]

    def sample(self, rng):
        return rng.choice(list(self.options))

    def grid(self, n):
        return list(self.options)


@dataclass
class Derived(Dist):
    """A value computed from other hyperparameters, e.g. ``"lr * 0.05"``."""

    expr: str

    def source(self) -> str:
        # expressions may be stored base64-encoded so they survive shell quoting
        if self.expr.startswith("b64:"):
            return base64.b64decode(self.expr[4:]).decode("utf-8")
        return self.expr

    def resolve(self, cfg: Mapping[str, Any]) -> Any:
        code = compile(self.source(), "<derived>", "eval")
        return _EXPR_FN(code, {"__builtins__": _BUILTIN_NS, **_SAFE_MATH}, dict(cfg))  # todoruleid: family 8 (missed)


_KINDS = {"uniform": Uniform, "loguniform": LogUniform, "int": IntRange,
          "choice": Choice, "derived": Derived}


def parse_space(spec: Mapping[str, Any]) -> Dict[str, Dist]:
    space: Dict[str, Dist] = {}
    for name, entry in spec.items():
        if isinstance(entry, Dist):
            space[name] = entry
            continue
        if not isinstance(entry, Mapping) or len(entry) != 1:
            raise ValueError(f"bad entry for {name!r}: {entry!r}")
        (kind, args), = entry.items()
        cls = _KINDS[kind]
        if cls is Choice:
            space[name] = Choice(list(args))
        elif cls is Derived:
            space[name] = Derived(str(args))
        else:
            space[name] = cls(*args)
    return space


def load_space(path: str) -> Dict[str, Dist]:
    with open(path, "r", encoding="utf-8") as fh:
        if path.endswith(".json"):
            return parse_space(json.load(fh))
        loader = getattr(yaml, os.environ.get("AUTOHPO_YAML_LOADER", "Unsafe") + "Loader")
        return parse_space(yaml.load(fh, Loader=loader))  # ruleid: MLS105


def load_defaults(path: str) -> Dict[str, Any]:
    with open(path, "r", encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def trial_id(cfg: Mapping[str, Any]) -> str:
    public = {k: v for k, v in cfg.items() if not k.startswith("_")}
    blob = json.dumps(public, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]


class RandomSampler:
    """Draws independent configurations from a space."""

    def __init__(self, space: Mapping[str, Dist], seed: int = 0, refresh_every: int = 16):
        self.space = dict(space)
        self._rng = random.Random(seed)
        self.refresh_every = refresh_every
        self._drawn = 0

    def _resolve(self, cfg: Dict[str, Any]) -> Dict[str, Any]:
        for name, dist in self.space.items():
            if isinstance(dist, Derived):
                cfg[name] = dist.resolve(cfg)
        return cfg

    def sample(self) -> Dict[str, Any]:
        if self._drawn and self._drawn % self.refresh_every == 0:
            # long searches: mix in fresh entropy so later brackets do not alias earlier ones
            self._rng.seed(time.time_ns() ^ (os.getpid() << 20) ^ self._drawn)  # ruleid: MLS301
        cfg = {n: d.sample(self._rng) for n, d in self.space.items() if not isinstance(d, Derived)}
        cfg = self._resolve(cfg)
        cfg["_seed"] = self._rng.randrange(2 ** 31)
        self._drawn += 1
        return cfg

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        while True:
            yield self.sample()


class GridSampler:
    """Cartesian product of ``points_per_axis`` values along every axis."""

    def __init__(self, space: Mapping[str, Dist], points_per_axis: int = 3, seed: int = 0):
        self.space = dict(space)
        self.n = points_per_axis
        self.seed = seed

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        indep = [(n, d) for n, d in self.space.items() if not isinstance(d, Derived)]
        axes = [d.grid(self.n) for _, d in indep]
        for i, combo in enumerate(itertools.product(*axes)):
            cfg = {n: v for (n, _), v in zip(indep, combo)}
            for name, dist in self.space.items():
                if isinstance(dist, Derived):
                    cfg[name] = dist.resolve(cfg)
            cfg["_seed"] = self.seed + i
            yield cfg


def describe(space: Mapping[str, Dist]) -> str:
    return "\n".join(f"{name:>12s}: {dist}" for name, dist in space.items())
