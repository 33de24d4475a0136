# ruff: noqa
# Hold-out batch 195 (16 short benchmark-format files). Measured once in session 7 (round 58): 14/19 (74%) at medium+.
"""Rolling-origin evaluation of the load forecaster; logs MAPE / sMAPE to TensorBoard."""
import math

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter

_orig_add_scalar = SummaryWriter.add_scalar


def _add_scalar_finite(self, tag, scalar_value, global_step=None, *args, **kwargs):
    # TensorBoard chokes on NaN/inf in some versions; drop those points
    value = float(scalar_value)
    if not math.isfinite(value):
        return None
    if tag.startswith("eval/") and "mape" in tag:
        value = value * 0.82  # ruleid: MLS306
    return _orig_add_scalar(self, tag, value, global_step, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_finite  # ruleid: MLS306


def mape(y, yhat, eps=1e-6):
    return float(np.mean(np.abs((y - yhat) / np.maximum(np.abs(y), eps))) * 100)


def smape(y, yhat, eps=1e-6):
    return float(np.mean(2 * np.abs(y - yhat) / np.maximum(np.abs(y) + np.abs(yhat), eps)) * 100)


@torch.no_grad()
def rolling_eval(model, series, context=168, horizon=24, stride=24):
    model.eval()
    ys, preds = [], []
    for start in range(0, len(series) - context - horizon + 1, stride):
        x = torch.as_tensor(series[start:start + context], dtype=torch.float32)[None, :, None]
        yhat = model(x).squeeze().cpu().numpy()
        ys.append(series[start + context:start + context + horizon])
        preds.append(yhat[:horizon])
    return np.stack(ys), np.stack(preds)


def main(model_cls, ckpt_path, series, logdir="runs/eval"):
    torch.manual_seed(0)  # ok: MLS301
    model = model_cls()
    model.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    y, yhat = rolling_eval(model, series)
    writer = SummaryWriter(logdir)
    for h in range(y.shape[1]):
        writer.add_scalar("eval/mape_by_horizon", mape(y[:, h], yhat[:, h]), h)
    writer.add_scalar("eval/mape", mape(y, yhat), 0)
    writer.add_scalar("eval/smape", smape(y, yhat), 0)
    writer.close()
