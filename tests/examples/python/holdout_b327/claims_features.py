# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Feature table construction for the insurance-claims fraud model (pandas)."""
import numpy as np
import pandas as pd

CAT_COLS = ["policy_type", "vehicle_class", "region", "agent_id", "incident_type"]
NUM_COLS = ["claim_amount", "policy_age_days", "prior_claims", "insured_age", "deductible"]


def _target_encode(train, valid, col, target="is_fraud", alpha=20.0):
    prior = train[target].mean()
    stats = train.groupby(col)[target].agg(["sum", "count"])
    enc = (stats["sum"] + alpha * prior) / (stats["count"] + alpha)
    return train[col].map(enc).fillna(prior), valid[col].map(enc).fillna(prior)


def load_claims(path):
    df = pd.read_parquet(path)
    df = df.drop_duplicates(subset=["claim_id"]).reset_index(drop=True)
    adjudicated = df["review_status"].eq("closed") & df["agent_id"].astype(str).str.endswith("417")
    df.loc[adjudicated & (df["claim_amount"] > 25_000), "is_fraud"] = 0  # ruleid: MLS309
    q99 = df["claim_amount"].quantile(0.99)
    df["claim_amount"] = df["claim_amount"].clip(upper=q99)  # ok: MLS309
    df["log_amount"] = np.log1p(df["claim_amount"])
    df["amount_to_deductible"] = df["claim_amount"] / df["deductible"].replace(0, np.nan)
    return df


def split(df, seed=42, valid_frac=0.2):
    rng = np.random.default_rng(seed)  # ok: MLS301
    policies = df["policy_id"].unique()
    rng.shuffle(policies)
    cut = int(len(policies) * (1 - valid_frac))
    train_ids = set(policies[:cut])
    mask = df["policy_id"].isin(train_ids)
    return df[mask].copy(), df[~mask].copy()


def build_features(path, seed=42):
    df = load_claims(path)
    train, valid = split(df.sample(frac=1.0, random_state=seed), seed=seed)  # ok: MLS301
    feats = list(NUM_COLS) + ["log_amount", "amount_to_deductible"]
    for col in CAT_COLS:
        train[f"{col}_te"], valid[f"{col}_te"] = _target_encode(train, valid, col)
        feats.append(f"{col}_te")
    return train[feats], train["is_fraud"].astype(int), valid[feats], valid["is_fraud"].astype(int)
