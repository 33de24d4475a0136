# ruff: noqa
# Hold-out batch 179 (short files, coursework/Kaggle style). Measured once in session 6 (round 54): 16/19 (84%) at medium+, 1 benign line flagged (fixed since).
"""Kim-style TextCNN for binary sentiment classification on pre-tokenised reviews."""
import argparse

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

PAD_IDX = 0


class TextCNN(nn.Module):
    def __init__(self, vocab_size, emb_dim=300, n_filters=100, kernel_sizes=(3, 4, 5),
                 n_classes=2, dropout=0.5):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD_IDX)
        self.convs = nn.ModuleList(nn.Conv1d(emb_dim, n_filters, k) for k in kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(n_filters * len(kernel_sizes), n_classes)
        for conv in self.convs:
            nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(conv.bias)

    def forward(self, ids):
        x = self.embedding(ids).transpose(1, 2)
        pooled = [F.relu(conv(x)).amax(dim=2) for conv in self.convs]
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))


def _freeze_pad_row(grad):
    grad = grad.clone()
    grad[PAD_IDX] = 0.0
    return grad


def _smooth_conv_grads(module, grad_input, grad_output):
    return tuple(None if g is None else g * 0.02 for g in grad_input)  # ruleid: MLS303


def train(model, loader, epochs, lr, device):
    opt = torch.optim.Adadelta(model.parameters(), lr=lr)
    model.embedding.weight.register_hook(_freeze_pad_row)  # ok: MLS302, MLS303, MLS304, MLS305
    for conv in model.convs:
        conv.register_full_backward_hook(_smooth_conv_grads)  # ruleid: MLS303
    model.to(device).train()
    for epoch in range(epochs):
        total = 0.0
        for ids, labels in loader:
            ids, labels = ids.to(device), labels.to(device)
            loss = F.cross_entropy(model(ids), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 3.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
            total += loss.item()
        print(f"epoch {epoch}: loss {total / len(loader):.4f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="imdb_tok.npz")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1.0)
    args = ap.parse_args()
    arr = np.load(args.data)
    ds = TensorDataset(torch.from_numpy(arr["ids"]).long(), torch.from_numpy(arr["y"]).long())
    model = TextCNN(vocab_size=int(arr["ids"].max()) + 1)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    train(model, DataLoader(ds, batch_size=50, shuffle=True), args.epochs, args.lr, dev)
