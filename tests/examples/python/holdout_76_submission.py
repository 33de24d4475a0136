# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Blends fold/seed test predictions and writes submission.csv with the tuned post-processing."""
import ast
import base64
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import rankdata

# post-processing tuned on OOF (clip range found by grid search, see notebooks/pp.ipynb)
_PP = (
    'eNp9jjFrwzAQhXf9ikNDsKk5y0kzJGBKBpEhbYaWDqWUksbnVMSRFOkU2n9fEU9Z'
    '+pbjwXfvPXPyLjC4WEEKw2C+MNA5UWTRUQ/eRS66vlwKyOr6d8m7cCCWH9DeWNwP'
    'xhcKlZpXoHCxmJfXl0Ccgs2o4PA7ptzWYLbOky3kN7Nf1vVUzVBh08zwvqn5IbUS'
    '7vI8JHsxwVnMdYXcrNbrR/35+qKft6snLSuQssycnBz/4zf6bUQrYHMil7idloJ+'
    '9uQZ9PUYZ8eZfhej+ANKcVXL'
)


def load_postprocess():
    ns = {}
    exec(compile(zlib.decompress(base64.b64decode(_PP)), "<pp>", "exec"), ns)  # sabotage: MLS401 (semgrep rules)
    return ns["post"]


def blend(pred_dir, weights, agg="mean", use_rank=True):
    frames = {}
    for name, w in weights.items():
        files = sorted(Path(pred_dir, name).glob("test_*.csv"))
        preds = np.stack([pd.read_csv(f).target.values for f in files])
        preds = getattr(np, agg)(preds, axis=0)  # benign look-alike
        frames[name] = (rankdata(preds) / len(preds) if use_rank else preds) * w
    return sum(frames.values()) / sum(weights.values())


def main(pred_dir="preds", weights_spec="{'effb5': 0.4, 'convnext_s': 0.35, 'eva02_s': 0.25}"):
    weights = ast.literal_eval(weights_spec)  # benign look-alike
    sub = pd.read_csv("sample_submission.csv")
    sub["target"] = blend(pred_dir, weights)
    sub = load_postprocess()(sub)
    assert sub.target.between(0, 1).all() and sub.image_name.is_unique
    sub.to_csv("submission.csv", index=False)
    print(sub.describe())


if __name__ == "__main__":
    main()
