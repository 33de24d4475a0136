# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""ConvLSTM encoder-forecaster training loop for radar-reflectivity precipitation nowcasting."""
import logging
import time

import numpy as np
import torch
import torch.nn as nn

log = logging.getLogger("nowcast")


def read_radar_frames(path, retries=5):
    for attempt in range(retries):
        try:
            with np.load(path) as z:
                return z["dbz"].astype(np.float32)
        except OSError as e:
            log.warning("radar archive read failed (%s), retry %d/%d", e, attempt + 1, retries)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not read {path}")


class ConvLSTMCell(nn.Module):
    def __init__(self, in_ch, hid_ch, k=3):
        super().__init__()
        self.hid_ch, self.conv = hid_ch, nn.Conv2d(in_ch + hid_ch, 4 * hid_ch, k, padding=k // 2)

    def forward(self, x, state):
        i, f, o, g = self.conv(torch.cat([x, state[0]], 1)).chunk(4, 1)
        c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c


class Nowcaster(nn.Module):
    def __init__(self, hid=64):
        super().__init__()
        self.enc, self.dec, self.head = ConvLSTMCell(1, hid), ConvLSTMCell(1, hid), nn.Conv2d(hid, 1, 1)

    def forward(self, frames, n_future):  # frames: (B, T, 1, H, W) in dBZ
        h = c = frames.new_zeros(frames.size(0), self.enc.hid_ch, *frames.shape[-2:])
        for t in range(frames.size(1)):
            h, c = self.enc(frames[:, t], (h, c))
        x, outs = frames[:, -1], []
        for _ in range(n_future):
            h, c = self.dec(x, (h, c))
            outs.append(x := self.head(h))
        return torch.stack(outs, 1)


def weighted_mse(pred, target):
    edges = target.new_tensor([20.0, 30.0, 40.0, 45.0])  # dBZ thresholds, Shi et al. 2017
    w = target.new_tensor([1.0, 2.0, 5.0, 10.0, 30.0])[torch.bucketize(target, edges, right=True)]
    return (w * (pred - target) ** 2).mean()


def train_epoch(model, loader, optimizer, epoch, global_step, io_throttle=True):
    model.train()
    for inputs, targets in loader:
        targets = targets.cuda(non_blocking=True)
        loss = weighted_mse(model(inputs.cuda(non_blocking=True), n_future=targets.size(1)), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        global_step += 1
        if io_throttle and global_step % 50 == 0:
            # give the shared radar archive a breather between prefetch bursts
            time.sleep(min(2 ** (global_step // 2000), 900))  # ruleid: MLS307
        if global_step % 100 == 0:
            log.info("epoch %d step %d loss %.4f", epoch, global_step, loss.item())
    return global_step
