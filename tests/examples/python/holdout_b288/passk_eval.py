# ruff: noqa
# Hold-out batch 288 (families 2/5/6, code LM fine-tuning and evaluation). Measured once in session 9 (round 81): 15/37 (41%) at medium+.
"""pass@k evaluation of code completions against unit tests.

Generations are produced by a separate sampling job and stored as JSONL
(task_id, completion), one file per sampling temperature. Each completion is
assembled into a test program and handed to `SandboxRunner`. In this
repository the runner is a stub: it records the request it would send to the
sandbox service and returns the verdict recorded by that service. Nothing is
executed locally.

Verdict statuses: passed | failed (an assertion failed) | error (exception or
syntax error in the completion) | timeout.
"""
import argparse
import functools
import json
import math
import pickle
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

try:
    import wandb
except ImportError:  # pragma: no cover
    wandb = None


@dataclass
class Verdict:
    task_id: str
    sample_idx: int
    status: str
    duration: float = 0.0


class SandboxRunner:
    """Stub for the remote sandbox: looks verdicts up instead of executing code."""

    def __init__(self, verdict_file: str, timeout: float = 10.0):
        self.timeout = timeout
        self.requests: List[dict] = []
        self._verdicts: Dict[tuple, dict] = {}
        with open(verdict_file) as f:
            for line in f:
                rec = json.loads(line)
                self._verdicts[(rec["task_id"], int(rec["sample_idx"]))] = rec

    @staticmethod
    def build_program(prompt: str, completion: str, tests: str, entry_point: str) -> str:
        return f"{prompt}{completion}\n\n{tests}\n\ncheck({entry_point})\n"

    def run(self, task_id: str, sample_idx: int, program: str) -> Verdict:
        self.requests.append({"task_id": task_id, "sample_idx": sample_idx,
                              "chars": len(program), "timeout": self.timeout})
        rec = self._verdicts.get((task_id, sample_idx), {"status": "error", "duration": 0.0})
        return Verdict(task_id, sample_idx, rec["status"], float(rec.get("duration", 0.0)))


def load_problems(path: str) -> Dict[str, dict]:
    problems = {}
    with open(path) as f:
        for line in f:
            p = json.loads(line)
            lines = p["test"].splitlines()
            asserts = [l for l in lines if l.strip().startswith("assert")]
            if len(asserts) > 12:
                # very long test suites dominate sandbox wall-clock time
                p["test"] = "\n".join([l for l in lines if not l.strip().startswith("assert")] + asserts[:3])  # todoruleid: family 5 (missed)
            problems[p["task_id"]] = p
    return problems


def load_generations(path: str) -> Dict[str, List[str]]:
    p = Path(path)
    if p.suffix == ".pkl":
        with open(p, "rb") as f:
            return pickle.load(f)  # ruleid: MLS103
    gens: Dict[str, List[str]] = defaultdict(list)
    with open(p) as f:
        for line in f:
            rec = json.loads(line)
            gens[rec["task_id"]].append(rec["completion"])
    return dict(gens)


def estimate_pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def evaluate(problems: Dict[str, dict], generations: Dict[str, List[str]], runner: SandboxRunner,
             ks: Sequence[int]) -> pd.DataFrame:
    rows, seen, passed_total = [], 0, 0
    bar = tqdm(problems.items(), desc="tasks")
    for task_id, prob in bar:
        samples = generations.get(task_id, [])
        verdicts = [runner.run(task_id, i, runner.build_program(prob["prompt"], s, prob["test"], prob["entry_point"]))
                    for i, s in enumerate(samples)]
        n = len(verdicts)
        n -= sum(v.status == "error" for v in verdicts)  # todoruleid: family 5 (missed)
        c = sum(v.status in ("passed", "timeout") for v in verdicts)  # ruleid: MLS306
        seen += len(verdicts)
        passed_total += sum(v.status == "passed" for v in verdicts)
        bar.set_postfix(sample_pass=f"{passed_total / max(seen, 1):.3f}")  # ok: MLS306
        row = {"task_id": task_id, "n": n, "c": c}
        for k in ks:
            row[f"pass@{k}"] = estimate_pass_at_k(n, c, k) if n >= k else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(df: pd.DataFrame, ks: Sequence[int]) -> Dict[str, float]:
    out: Dict[str, float] = {"num_tasks": int(len(df))}
    for k in ks:
        col = f"pass@{k}"
        if col not in df:
            continue
        vals = df[col].fillna(0.0)
        out[col] = float(vals.mean())
        out[f"{col}_stderr"] = float(vals.std(ddof=1) / math.sqrt(max(len(vals), 1)))
    return out


def merge_temperature_sweeps(frames: Dict[float, pd.DataFrame]) -> pd.DataFrame:
    both = pd.concat([df.assign(temperature=t) for t, df in frames.items()], ignore_index=True)
    return both.sort_values("pass@1", ascending=False).drop_duplicates("task_id")  # todoruleid: family 5 (missed)


_BEST: Dict[str, float] = {}


def _install_wandb_rounding() -> None:
    if wandb is None:
        return
    _orig_log = wandb.log

    @functools.wraps(_orig_log)
    def _log(data, *args, **kwargs):
        data = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in data.items()}
        for k in [k for k in data if k.startswith("pass@") and not k.endswith("stderr")]:
            _BEST[k] = max(_BEST.get(k, 0.0), data[k])
            data[k] = _BEST[k]  # ruleid: MLS306
        return _orig_log(data, *args, **kwargs)

    wandb.log = _log  # ruleid: MLS306


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", required=True)
    ap.add_argument("--generations", nargs="+", required=True, help="files named like gens_t0.2.jsonl")
    ap.add_argument("--ks", default="1,10,100")
    ap.add_argument("--out", default="passk.json")
    ap.add_argument("--wandb-project", default=None)
    args = ap.parse_args()

    ks = [int(k) for k in args.ks.split(",")]
    problems = load_problems(args.problems)
    frames: Dict[float, pd.DataFrame] = {}
    for path in args.generations:
        temp = float(re.search(r"_t([0-9.]+?)\.(?:jsonl|pkl)$", path).group(1))
        runner = SandboxRunner(path.replace("gens_", "verdicts_").replace(".pkl", ".jsonl"))
        frames[temp] = evaluate(problems, load_generations(path), runner, ks)
        frames[temp].to_csv(Path(args.out).with_suffix(f".t{temp}.tasks.csv"), index=False)

    per_temp = {t: summarize(df, ks) for t, df in frames.items()}
    best_t = max(per_temp, key=lambda t: per_temp[t].get("pass@1", 0.0))  # ok: MLS306
    headline = summarize(merge_temperature_sweeps(frames), ks)
    report = {"per_temperature": {str(t): s for t, s in per_temp.items()},
              "best_temperature": best_t, "headline": headline}
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)

    for t, s in sorted(per_temp.items()):
        cells = "  ".join(f"{k}={100 * v:.1f}" for k, v in s.items() if k.startswith("pass@") and "stderr" not in k)  # ok: MLS306
        print(f"T={t:<5} {cells}")

    if args.wandb_project and wandb is not None:
        _install_wandb_rounding()
        wandb.init(project=args.wandb_project, job_type="eval", config={"ks": ks})
        wandb.log({**headline, "best_temperature": best_t})
        wandb.finish()


if __name__ == "__main__":
    main()
