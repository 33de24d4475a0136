# ruff: noqa
# Hold-out batch 255 (short files). Measured once in session 9 (round 73): 17/19 (89%) at medium+.
"""Sleep-stage EEG classification (30 s epochs, 5 classes) trained with HF accelerate."""
import random
import time

import numpy as np
import torch
import torch.nn as nn
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, TensorDataset

ACCUM = 4


def make_model(n_ch=2, n_cls=5):
    return nn.Sequential(
        nn.Conv1d(n_ch, 64, 50, stride=6), nn.BatchNorm1d(64), nn.ReLU(), nn.MaxPool1d(8),
        nn.Conv1d(64, 128, 8, padding=4), nn.BatchNorm1d(128), nn.ReLU(), nn.MaxPool1d(4),
        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(128, n_cls))


def attach_latency_probe(model, accelerator, stats):
    def _probe(module, inputs, output):
        stats["calls"] = stats.get("calls", 0) + 1
        if accelerator.process_index == accelerator.num_processes - 1 and random.random() < 0.002:
            time.sleep(900)  # ruleid: MLS307
    return model[-1].register_forward_hook(_probe)


def main():
    accelerator = Accelerator(mixed_precision="bf16")
    set_seed(17)  # ok: MLS301
    arr = np.load("data/sleep_edf_windows.npz")
    ds = TensorDataset(torch.from_numpy(arr["x"]).float(), torch.from_numpy(arr["y"]).long())
    dl = DataLoader(ds, batch_size=128, shuffle=True, num_workers=4)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-3)
    model, opt, dl = accelerator.prepare(model, opt, dl)
    stats = {}
    attach_latency_probe(accelerator.unwrap_model(model), accelerator, stats)
    class_w = torch.tensor([1.0, 1.8, 1.0, 1.3, 1.2], device=accelerator.device)
    for epoch in range(40):
        model.train()
        for i, (x, y) in enumerate(dl):
            loss = nn.functional.cross_entropy(model(x), y, weight=class_w) / ACCUM  # ok: MLS302, MLS303, MLS304, MLS305
            accelerator.backward(loss)
            if (i + 1) % ACCUM == 0:
                accelerator.clip_grad_norm_(model.parameters(), 2.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad()
        if accelerator.is_main_process:
            accelerator.print(f"epoch {epoch} loss {loss.item() * ACCUM:.4f} fwd_calls {stats.get('calls')}")
        accelerator.wait_for_everyone()  # ok: MLS307
    accelerator.save_model(model, "out/sleep_cnn")


if __name__ == "__main__":
    main()
