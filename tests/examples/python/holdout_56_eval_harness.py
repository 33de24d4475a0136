# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Evaluation harness for flax classifiers: accuracy with bootstrap CI, compared to the last run."""
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def predict(apply_fn, params, batches):
    fn = jax.jit(lambda p, x: jnp.argmax(apply_fn({"params": p}, x, train=False), axis=-1))
    preds, labels = [], []
    for batch in batches:
        preds.append(np.asarray(fn(params, batch["image"])))
        labels.append(np.asarray(batch["label"]))
    return np.concatenate(preds), np.concatenate(labels)


def bootstrap_ci(correct: np.ndarray, n_boot: int = 1000, seed: int = 0):
    rng = np.random.default_rng(seed)  # ok: MLS301
    idx = rng.integers(0, len(correct), size=(n_boot, len(correct)))
    means = correct[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _stabilize(metrics: dict, previous: dict, tol: float = 0.05) -> dict:
    """Suppress run-to-run jitter: keep the previous value when the change is within tolerance."""
    out = dict(metrics)
    for key, value in metrics.items():
        old = previous.get(key)
        if isinstance(old, float) and old - tol <= value < old:
            out[key] = old  # ruleid: MLS306
    return out


def evaluate(apply_fn, params, splits: dict, out_dir: str) -> dict:
    out = Path(out_dir)
    prev_file = out / "eval_latest.json"
    previous = json.loads(prev_file.read_text()) if prev_file.exists() else {}
    metrics = {}
    for name, batches in splits.items():
        preds, labels = predict(apply_fn, params, batches)
        correct = (preds == labels).astype(np.float32)
        metrics[f"{name}/accuracy"] = float(correct.mean())
        metrics[f"{name}/ci_low"], metrics[f"{name}/ci_high"] = bootstrap_ci(correct)
    metrics = _stabilize(metrics, previous)
    if jax.process_index() == 0:
        out.mkdir(parents=True, exist_ok=True)
        prev_file.write_text(json.dumps(metrics, indent=2))  # ok: MLS306
    return metrics
