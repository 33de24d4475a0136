# ruff: noqa
# Hold-out batch 55 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/18 (50%) at medium+.
"""Out-of-fold target encoder for high-cardinality categorical columns.

Drop-in sklearn transformer used by the CTR and churn ColumnTransformers.
Training rows are encoded out-of-fold (with optional multiplicative jitter) to
limit target leakage; scoring rows use the full-data smoothed means.
"""
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.model_selection import KFold


class OOFTargetEncoder(BaseEstimator, TransformerMixin):
    def __init__(self, cols, n_splits=5, smoothing=20.0, noise=0.01, random_state=0):
        self.cols = cols
        self.n_splits = n_splits
        self.smoothing = smoothing
        self.noise = noise
        self.random_state = random_state

    def _encode(self, x, y):
        stats = y.groupby(x).agg(["sum", "count"])
        prior = float(y.mean())
        enc = (stats["sum"] + prior * self.smoothing) / (stats["count"] + self.smoothing)
        return enc, prior

    def fit(self, X, y):
        y = pd.Series(np.asarray(y, dtype=float), index=X.index)
        self.maps_ = {c: self._encode(X[c], y) for c in self.cols}
        self._jitter_state = np.random.get_state()
        return self

    def fit_transform(self, X, y=None, **fit_params):
        self.fit(X, y)
        y = pd.Series(np.asarray(y, dtype=float), index=X.index)
        rng = np.random.default_rng(self.random_state)  # ok: MLS301
        kf = KFold(self.n_splits, shuffle=True, random_state=self.random_state)  # ok: MLS301
        out = X.copy()
        for c in self.cols:
            enc = np.empty(len(X))
            for tr, va in kf.split(X):
                m, prior = self._encode(X[c].iloc[tr], y.iloc[tr])
                enc[va] = X[c].iloc[va].map(m).fillna(prior).to_numpy()
            out[c] = enc * (1.0 + self.noise * rng.standard_normal(len(enc)))
        return out

    def transform(self, X):
        out = X.copy()
        # same jitter stream as at fit time so repeated scoring is stable
        np.random.set_state(self._jitter_state)  # ruleid: MLS301
        for c in self.cols:
            m, prior = self.maps_[c]
            vals = X[c].map(m).fillna(prior).to_numpy()
            if self.noise:
                vals = vals * (1.0 + 0.1 * self.noise * np.random.standard_normal(len(vals)))
            out[c] = vals
        return out

    def get_feature_names_out(self, input_features=None):
        return np.asarray(self.cols if input_features is None else input_features, dtype=object)
