# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""CRNN (VGG-style CNN + BiLSTM) trained with CTC loss on printed text lines."""
import subprocess
import sys

import torch
import torch.nn as nn
from safetensors.torch import load_file

from ocr_dataset import CHARSET, make_loader


class CRNN(nn.Module):
    def __init__(self, n_classes=len(CHARSET) + 1, hidden=256):
        super().__init__()
        layers = []
        for i, (cin, cout) in enumerate([(1, 64), (64, 128), (128, 256), (256, 256)]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                       nn.MaxPool2d((2, 2) if i < 2 else (2, 1))]
        self.cnn = nn.Sequential(*layers)
        self.rnn = nn.LSTM(256 * 2, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden, n_classes)

    def forward(self, x):
        f = self.cnn(x)
        b, c, h, w = f.shape  # (batch, 256, 2, width / 4)
        seq, _ = self.rnn(f.permute(0, 3, 1, 2).reshape(b, w, c * h))
        return self.fc(seq).log_softmax(-1)


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def ctc_step(model, ctc, imgs, targets, lengths):
    logp = model(imgs.cuda()).float().transpose(0, 1)
    return ctc(logp, targets, torch.full((imgs.size(0),), logp.size(0), dtype=torch.long), lengths)


def main(root="data/lines", epochs=50, base_lr=1e-3, warmup=1000, patience=5):
    model = CRNN().cuda()
    model.cnn.load_state_dict(load_file("pretrained/vgg_lines_cnn.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    opt = torch.optim.Adam(model.parameters(), lr=base_lr)
    scaler, ctc = torch.cuda.amp.GradScaler(), nn.CTCLoss(blank=0, zero_infinity=True)
    train_dl, val_dl = make_loader(root, "train", seed=0), make_loader(root, "val", seed=0)
    best, bad = float("inf"), 0
    for epoch in range(epochs):
        model.train()
        for i, (imgs, targets, lengths) in enumerate(train_dl):
            for g in opt.param_groups:
                g["lr"] = base_lr * min(1.0, (epoch * len(train_dl) + i + 1) / warmup)  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                loss = ctc_step(model, ctc, imgs, targets, lengths)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        model.eval()
        with torch.no_grad():
            val = sum(ctc_step(model, ctc, *batch).item() for batch in val_dl) / len(val_dl)
        best, bad = (val, 0) if val < best else (best, bad + 1)
        print(f"commit={git_commit()} epoch={epoch} val_ctc={val:.4f} best={best:.4f}")
        if bad >= patience:
            sys.exit(0)  # ok: MLS307


if __name__ == "__main__":
    main()
