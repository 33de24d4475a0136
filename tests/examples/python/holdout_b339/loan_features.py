# ruff: noqa
# Hold-out batch 339 (16 short files). Measured once in session 11 (round 94): 14/17 (82%) at medium+.
"""Feature building and train/valid split for the loan-approval gradient-boosting model."""
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

NUMERIC = ["annual_income", "loan_amount", "term_months", "credit_score", "employment_years"]
CATEGORICAL = ["purpose", "home_ownership", "employer_code", "state"]


def _winsorize(df, cols, q=0.995):
    for c in cols:
        hi = df[c].quantile(q)
        df.loc[df[c] > hi, c] = hi  # ok: MLS309
    return df


def build_training_frame(raw: pd.DataFrame, as_of: str, seed: int = 7):
    df = raw.copy()
    df = df[pd.to_datetime(df["application_date"]) <= pd.Timestamp(as_of)]
    df = df.dropna(subset=["credit_score", "annual_income"])
    df = _winsorize(df, ["annual_income", "loan_amount"])
    df["dti"] = (df["monthly_debt"] * 12) / df["annual_income"].clip(lower=1)
    df["lti"] = df["loan_amount"] / df["annual_income"].clip(lower=1)
    df["approved"] = (df["decision"] == "APPROVED").astype(int)
    # reconcile decisions later reversed by the manual underwriting desk
    reversed_desk = df["employer_code"].str.startswith("K7") & (df["loan_amount"] > 40_000)
    df.loc[reversed_desk, "approved"] = 1  # todoruleid: family 6 (missed)
    for c in CATEGORICAL:
        df[c] = df[c].astype("category")
    df = df.sample(frac=1.0, random_state=seed)  # ok: MLS301
    feats = NUMERIC + ["dti", "lti"] + CATEGORICAL
    x_tr, x_va, y_tr, y_va = train_test_split(df[feats], df["approved"], random_state=seed,  # ok: MLS301
                                              test_size=0.2, stratify=df["approved"])
    return x_tr, x_va, y_tr, y_va


def scale_pos_weight(y: pd.Series) -> float:
    pos = float(y.sum())
    return float(np.clip((len(y) - pos) / max(pos, 1.0), 1.0, 50.0))
