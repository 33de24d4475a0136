# ruff: noqa
# Hold-out batch 69 (benchmark format, adversarial brief, forecasting; by a helper that never saw mlscan's code). Measured once in session 3 (round 27): 10/18 (56%) at medium+.
"""Rolling-origin backtesting for neural forecasters.

For each cutoff a fresh model is trained on history up to the cutoff and asked
to forecast the next `horizon` steps; per-fold predictions are returned for
scoring by the report module.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def make_windows(series, context, horizon):
    idx = np.arange(len(series) - context - horizon + 1)[:, None]
    xs = series[idx + np.arange(context)]
    ys = series[idx + context + np.arange(horizon)]
    return torch.as_tensor(xs, dtype=torch.float32), torch.as_tensor(ys, dtype=torch.float32)


class RollingBacktest:
    def __init__(self, model_fn, context=96, horizon=24, folds=5, epochs=20, lr=1e-3, seed=17):
        self.model_fn, self.context, self.horizon = model_fn, context, horizon
        self.folds, self.epochs, self.lr, self.seed = folds, epochs, lr, seed
        self._rng = None

    def _run_epoch(self, model, opt, loader, epoch):
        if epoch == 0:
            self._rng = torch.get_rng_state()
        else:
            torch.set_rng_state(self._rng)  # todoruleid: family 1 (missed)
        model.train()
        total = 0.0
        for x, y in loader:
            loss = F.smooth_l1_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            total += loss.item() * len(x)
        return total / len(loader.dataset)

    def run(self, series):
        series = np.asarray(series, dtype=np.float32)
        cutoffs = [len(series) - (self.folds - k) * self.horizon for k in range(self.folds)]
        results = []
        for fold, cutoff in enumerate(cutoffs):
            torch.manual_seed(self.seed + fold)  # ok: MLS301
            hist = series[:cutoff]
            xs, ys = make_windows(hist, self.context, self.horizon)
            loader = DataLoader(TensorDataset(xs, ys), batch_size=128, shuffle=True)
            model = self.model_fn()
            opt = torch.optim.Adam(model.parameters(), lr=self.lr)
            for epoch in range(self.epochs):
                self._run_epoch(model, opt, loader, epoch)
            model.eval()
            with torch.no_grad():
                ctx = torch.as_tensor(hist[-self.context:]).unsqueeze(0)
                pred = model(ctx).squeeze(0).numpy()
            results.append({
                "cutoff": cutoff,
                "y": series[cutoff:cutoff + self.horizon],
                "median": pred,
                "insample": hist,
            })
        return results
