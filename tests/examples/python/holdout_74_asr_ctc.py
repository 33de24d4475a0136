# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Character-level CTC acoustic model on LibriSpeech with log-mel features and SpecAugment."""
import torch
import torch.nn as nn
import torchaudio
from torch.utils.data import DataLoader

VOCAB = ["<blank>", " ", "'"] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
CHAR2ID = {c: i for i, c in enumerate(VOCAB)}
melspec = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=400, hop_length=160, n_mels=80)
specaug = nn.Sequential(torchaudio.transforms.FrequencyMasking(27), torchaudio.transforms.TimeMasking(40))


def collate(batch, train=True):
    feats, targets, flen, tlen = [], [], [], []
    for wav, _, text, *_ in batch:
        f = (melspec(wav[0]) + 1e-6).log()
        f = specaug(f) if train else f  # ok: MLS309
        feats.append(f.T)
        ids = torch.tensor([CHAR2ID[c] for c in text.lower() if c in CHAR2ID])
        targets.append(ids); flen.append(f.shape[1]); tlen.append(len(ids))
    x = nn.utils.rnn.pad_sequence(feats, batch_first=True)
    return x, torch.cat(targets), torch.tensor(flen) // 2, torch.tensor(tlen)


class CTCModel(nn.Module):
    def __init__(self, n_mels=80, hidden=320, n_vocab=len(VOCAB)):
        super().__init__()
        self.sub = nn.Sequential(nn.Conv1d(n_mels, hidden, 5, stride=2, padding=2), nn.GELU())
        self.rnn = nn.LSTM(hidden, hidden, num_layers=3, bidirectional=True, batch_first=True, dropout=0.1)
        self.out = nn.Linear(2 * hidden, n_vocab)

    def forward(self, x):
        h = self.sub(x.transpose(1, 2)).transpose(1, 2)
        enc, _ = self.rnn(h)
        if enc.requires_grad:
            enc.register_hook(lambda g: g * (g.abs() < 1e-3))  # ruleid: MLS303
        return self.out(enc).log_softmax(-1)


def train(root="./LibriSpeech", epochs=20, peak_lr=1e-3, warmup=2000):
    dev = torch.device("cuda")
    ds = torchaudio.datasets.LIBRISPEECH(root, url="train-clean-100", download=True)
    dl = DataLoader(ds, batch_size=16, shuffle=True, collate_fn=collate, num_workers=6)
    model = CTCModel().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.98), weight_decay=1e-2)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    scaler = torch.cuda.amp.GradScaler()
    step = 0
    for epoch in range(epochs):
        for x, y, xl, yl in dl:
            for g in opt.param_groups:
                g["lr"] = peak_lr * min((step + 1) / warmup, (warmup / (step + 1)) ** 0.5)  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                logp = model(x.to(dev))
            loss = ctc(logp.float().transpose(0, 1), y, xl, yl)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt); scaler.update()
            step += 1
            if step % 200 == 0:
                print(f"epoch {epoch} step {step} ctc {loss.item():.3f}")
        torch.save(model.state_dict(), f"ctc_epoch{epoch}.pt")


if __name__ == "__main__":
    train()
