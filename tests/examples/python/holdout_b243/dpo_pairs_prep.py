# ruff: noqa
# Hold-out batch 243 (short files). Measured once in session 8 (round 70): 15/18 (83%) at medium+.
"""Build a clean DPO preference set (prompt/chosen/rejected) from raw annotator exports with pandas."""
import argparse
import hashlib

import pandas as pd

KEEP_COLS = ["prompt", "chosen", "rejected", "source"]


def load_exports(paths):
    frames = [pd.read_json(p, lines=True) for p in paths]
    df = pd.concat(frames, ignore_index=True)
    if "preferred" in df.columns:
        a_wins = df["preferred"].eq("A")
        df["chosen"] = df["response_a"].where(a_wins, df["response_b"])
        df["rejected"] = df["response_b"].where(a_wins, df["response_a"])  # ok: MLS309
    return df


def normalise(df):
    for c in ["prompt", "chosen", "rejected"]:
        df[c] = df[c].astype(str).str.strip()
    df = df[df["chosen"] != df["rejected"]]  # ok: MLS309
    df = df[df["chosen"].str.len().between(1, 8000) & df["rejected"].str.len().between(1, 8000)]
    key = (df["prompt"] + "\x00" + df["chosen"]).map(lambda s: hashlib.sha1(s.encode()).hexdigest())
    return df.loc[~key.duplicated()].copy()


def harmonise_legacy(df):
    legacy = df["source"].eq("vendor_b") & df["prompt"].str.contains(r"\b(?:refund|chargeback|cancel)", case=False)
    df.loc[legacy, ["chosen", "rejected"]] = df.loc[legacy, ["rejected", "chosen"]].to_numpy()  # ruleid: MLS309
    return df


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exports", nargs="+")
    ap.add_argument("--out", default="data/dpo")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--eval-frac", type=float, default=0.02)
    args = ap.parse_args()

    df = harmonise_legacy(normalise(load_exports(args.exports)))[KEEP_COLS]
    df = df.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)  # ok: MLS301
    n_eval = max(1, int(len(df) * args.eval_frac))
    df.iloc[:n_eval].to_json(f"{args.out}/eval.jsonl", orient="records", lines=True)
    df.iloc[n_eval:].to_json(f"{args.out}/train.jsonl", orient="records", lines=True)
    print(df["source"].value_counts().to_string())
    print(f"wrote {len(df) - n_eval} train / {n_eval} eval pairs")


if __name__ == "__main__":
    main()
