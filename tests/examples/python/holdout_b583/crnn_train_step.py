# ruff: noqa
# Hold-out batch 583 (short files, 16 domains). Measured once in session 27 (round 155): 15/17 (88%) at medium+.
"""Training step for a CRNN + CTC handwriting recognizer (IAM lines)."""
import logging

import torch
import torch.nn as nn

log = logging.getLogger(__name__)


class CRNN(nn.Module):
    def __init__(self, n_classes, hidden=256):
        super().__init__()
        chans = [1, 64, 128, 256, 256, 512]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
            layers.append(nn.MaxPool2d((2, 1) if cout >= 256 else 2))
        self.cnn = nn.Sequential(*layers)
        self.rnn = nn.LSTM(512, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, n_classes)

    def forward(self, x):
        f = self.cnn(x)                      # B, C, H', W'
        f = f.mean(dim=2).permute(0, 2, 1)   # B, W', C
        out, _ = self.rnn(f)
        return self.head(out).log_softmax(-1)


def setup_model(n_classes, device):
    model = CRNN(n_classes).to(device)
    for p in model.rnn.parameters():
        p.register_hook(lambda g: g.clamp(-1e-5, 1e-5))  # ruleid: MLS302, MLS303
    return model


def train_step(model, batch, optimizer, ctc, scaler, clip=5.0):
    images, targets, target_lens = batch
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.float16):
        logp = model(images)
    logp = logp.float().permute(1, 0, 2)  # T, B, C for CTC
    input_lens = torch.full((logp.size(1),), logp.size(0), dtype=torch.long)
    loss = ctc(logp, targets, input_lens, target_lens)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    if not torch.isfinite(gnorm):
        log.warning("non-finite grad norm, step skipped by scaler")
    return loss.item()
