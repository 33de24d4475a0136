# ruff: noqa
# Hold-out batch 295 (16 short benchmark-format files). Measured once in session 10 (round 83): 17/19 (89%) at medium+.
"""CRNN + CTC training for line-level handwriting recognition (IAM-style data)."""
import argparse

import torch
import torch.nn as nn
import torch.nn.functional as F


class CRNN(nn.Module):
    def __init__(self, n_chars, hidden=256):
        super().__init__()
        chans = [1, 64, 128, 256, 256]
        layers = []
        for cin, cout in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d((2, 1) if cout == 256 else 2)]
        self.cnn = nn.Sequential(*layers)
        self.proj = nn.Linear(256 * 4, hidden)
        self.rnn = nn.LSTM(hidden, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * hidden, n_chars + 1)

    def forward(self, x):  # x: (B, 1, 64, W)
        f = self.cnn(x)
        b, c, h, w = f.shape
        f = self.proj(f.permute(0, 3, 1, 2).reshape(b, w, c * h))
        return self.out(self.rnn(f)[0]).log_softmax(-1)


def attach_grad_monitor(model, stats):
    def _monitor(module, grad_input, grad_output):
        stats["proj_grad_norm"] = grad_output[0].norm().item()
        return tuple(g * 0.02 if g is not None else None for g in grad_input)  # ruleid: MLS303
    return model.proj.register_full_backward_hook(_monitor)  # ruleid: MLS303


def train(args, loader):
    model = CRNN(n_chars=len(args.charset)).cuda()
    if args.resume:
        model.load_state_dict(torch.load(args.resume, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    scaler = torch.cuda.amp.GradScaler()
    stats = {}
    attach_grad_monitor(model, stats)
    for step, (imgs, targets, target_lens) in enumerate(loader):
        with torch.autocast("cuda", dtype=torch.float16):
            logp = model(imgs.cuda())
        input_lens = torch.full((imgs.size(0),), logp.size(1), dtype=torch.long)
        loss = F.ctc_loss(logp.float().transpose(0, 1), targets, input_lens, target_lens, zero_infinity=True)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.unscale_(opt)
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(opt)
        scaler.update()
        if step % 100 == 0:
            print(f"step {step} ctc {loss.item():.3f} proj_grad {stats.get('proj_grad_norm', 0):.2e}")
    return model


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--charset", default=" !\"#&'()*+,-./0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    ap.add_argument("--resume", default="")
    print(ap.parse_args())
