# ruff: noqa
# Hold-out batch 88 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 15/17 (88%) at medium+.
"""Figures for chapter 3/4 from exported wandb CSVs (wandb UI -> "Export CSV").

    python plot_curves.py runs/ch3_export.csv figs/ch3_loss.pdf
"""
import ast
import base64
import sys
import zlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

# lab figure style from the group wiki (compressed so it fits on one line)
_LAB_STYLE = ("eJwryCnRK0oOSCxKzC3WKy1ISSxJ1ahWSsvPK9FLS8zNzKlUslJQKk4tykxT0lGAiBdnVqUCRS2B/MSK1GK99KLMFCA/"
              "pKg0FSgE4ukl5hRkJALFDPSMazW5CpDsiFZKy0wvLUrVSynIVIpVsFUwNDXgAgC7QysC")


def apply_lab_style():
    exec(zlib.decompress(base64.b64decode(_LAB_STYLE)).decode("utf-8"), {"plt": plt})  # sabotage: MLS401 (semgrep rules)


def load_runs(csv_path):
    df = pd.read_csv(csv_path)
    # wandb exports the run config as a python-dict-looking string
    cfg = df["config"].map(ast.literal_eval)  # benign look-alike
    df["lr"] = cfg.map(lambda c: c.get("lr"))
    df["seed"] = cfg.map(lambda c: c.get("seed"))
    return df


def main(csv_path, out_path, smooth=25):
    apply_lab_style()
    df = load_runs(csv_path)
    fig, ax = plt.subplots(figsize=(3.3, 2.4))
    for lr, g in df.groupby("lr"):
        curves = g.pivot_table(index="_step", columns="seed", values="val/loss")
        mean = curves.mean(axis=1).rolling(smooth, min_periods=1).mean()  # ok: MLS306
        std = curves.std(axis=1).rolling(smooth, min_periods=1).mean()
        ax.plot(mean.index, mean.values, label=f"lr={lr:g}")
        ax.fill_between(mean.index, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel("val loss")
    ax.set_yscale("log")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
