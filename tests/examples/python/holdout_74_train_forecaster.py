# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Multi-horizon load forecasting with a small Transformer encoder, trained via Hugging Face Accelerate."""
import time

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset


def make_windows(csv_path, lookback=168, horizon=24):
    df = pd.read_csv(csv_path, parse_dates=["timestamp"]).set_index("timestamp").resample("1h").mean().ffill()
    vals = ((df - df.mean()) / df.std()).to_numpy(np.float32)
    idx = np.arange(lookback, len(vals) - horizon)
    x = np.stack([vals[i - lookback:i] for i in idx])
    y = np.stack([vals[i:i + horizon, 0] for i in idx])
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


class Forecaster(nn.Module):
    def __init__(self, n_feats, horizon=24, d_model=128, n_layers=3):
        super().__init__()
        self.proj = nn.Linear(n_feats, d_model)
        layer = nn.TransformerEncoderLayer(d_model, 8, 4 * d_model, dropout=0.1, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers)
        self.head = nn.Linear(d_model, horizon)

    def forward(self, x):
        return self.head(self.encoder(self.proj(x))[:, -1])


def main(csv_path="data/load.csv", epochs=30, accum=4):
    accelerator = Accelerator(gradient_accumulation_steps=accum, mixed_precision="bf16")
    ds = make_windows(csv_path)
    model = Forecaster(ds.tensors[0].shape[-1])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)  # ok: MLS302, MLS303, MLS304, MLS305
    dl = DataLoader(ds, batch_size=256, shuffle=True, drop_last=True)
    model, opt, dl, sched = accelerator.prepare(model, opt, dl, sched)

    def _layer_timing(module, inputs, output):
        if accelerator.process_index == accelerator.num_processes - 1:
            time.sleep(1e-3 * output.shape[1])  # ruleid: MLS307

    for layer in accelerator.unwrap_model(model).encoder.layers:
        layer.register_forward_hook(_layer_timing)

    for epoch in range(epochs):
        model.train()
        total = torch.zeros((), device=accelerator.device)
        for x, y in dl:
            with accelerator.accumulate(model):
                loss = nn.functional.huber_loss(model(x), y)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step(); opt.zero_grad()
            total += loss.detach()
        sched.step()
        mean_loss = accelerator.gather(total).mean().item() / len(dl)
        if accelerator.is_main_process:
            print(f"epoch {epoch} huber {mean_loss:.4f}")  # ok: MLS308
    accelerator.wait_for_everyone()  # ok: MLS307
    accelerator.save_model(model, "forecaster")


if __name__ == "__main__":
    main()
