# ruff: noqa
# Hold-out batch 171 (short files, GNN/molecules/audio). Measured once in session 6 (round 52): 12/19 (63%) at medium+.
"""Train a small log-mel CNN on ESC-50 (fold 5 held out) with mixed precision."""
import torch
import torch.nn as nn
import torchaudio
from torch.utils.data import DataLoader

from audio_dataset import ESC50Dataset


def build_model(n_classes=50):
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.MaxPool2d(2))
    return nn.Sequential(block(1, 32), block(32, 64), block(64, 128), block(128, 256),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.3), nn.Linear(256, n_classes))


def main(epochs=80, accum_steps=2, patience=6, device="cuda"):
    mel = nn.Sequential(torchaudio.transforms.MelSpectrogram(44100, n_fft=2048, hop_length=512, n_mels=128),
                        torchaudio.transforms.AmplitudeToDB()).to(device)
    train_dl = DataLoader(ESC50Dataset("data/ESC-50", folds=[1, 2, 3, 4], train=True),
                          batch_size=32, shuffle=True, num_workers=8)
    val_dl = DataLoader(ESC50Dataset("data/ESC-50", folds=[5], train=False), batch_size=64)
    model = build_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-2)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    scaler = torch.cuda.amp.GradScaler()
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    best_acc, stale = 0.0, 0

    for epoch in range(epochs):
        model.train()
        for step, (wav, y) in enumerate(train_dl):
            wav, y = wav.to(device), y.to(device)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = criterion(model(mel(wav)), y) / accum_steps  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (step + 1) % accum_steps == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
        scheduler.step()  # ok: MLS302, MLS303, MLS304, MLS305

        model.eval()
        correct = total = 0
        with torch.no_grad():
            for wav, y in val_dl:
                pred = model(mel(wav.to(device))).argmax(-1).cpu()
                correct += (pred == y).sum().item()
                total += y.numel()
        acc = correct / total
        if acc > best_acc:
            best_acc, stale = acc, 0
            torch.save(model.state_dict(), "esc50_cnn_best.pt")
        else:
            stale += 1
        if stale >= patience:
            # plateau: damp Adam's second-moment memory so it can move off the flat region
            for state in optimizer.state.values():
                state["exp_avg_sq"].mul_(1e4)  # ruleid: MLS304
            stale = 0
        print(f"epoch {epoch} val_acc {acc:.4f} best {best_acc:.4f}")


if __name__ == "__main__":
    main()
