# ruff: noqa
# Hold-out batch 157 (textbook course project: sentiment and QA). Measured once in session 5 (round 49): 22/29 (76%) at medium+.
"""BiLSTM sentiment baseline (Assignment 3, part B).

Trains a 2-layer bidirectional LSTM initialised with GloVe vectors on SST-2
(or IMDB) with a plain PyTorch training loop and keeps the checkpoint with
the best dev accuracy.

    python train_bilstm.py --dataset sst2 --glove data/glove.840B.300d.txt
"""
import argparse
import math
import os
import random
import time

import numpy as np
import torch
import torch.nn as nn

from data_prep import SentimentDataset, build_vocab, load_sentiment_splits, make_loader
from utils import (AverageMeter, Timer, attach_grad_monitor, check_resources, install_sigterm_handler,
                   log_run_metadata, make_writer, set_seed, setup_logging)


class BiLSTMClassifier(nn.Module):
    def __init__(self, vocab_size, embed_dim=300, hidden=256, layers=2, num_classes=2, dropout=0.3, pad_idx=0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_idx)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, bidirectional=True, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, num_classes)
        self.init_weights()

    def init_weights(self):
        for name, p in self.lstm.named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(p)
            elif "bias" in name:
                p.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
                n = p.size(0)
                p.data[n // 4 : n // 2].fill_(1.0)  # forget-gate bias = 1
        nn.init.xavier_uniform_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x, lengths):
        emb = self.dropout(self.embedding(x))
        packed = nn.utils.rnn.pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        feat = torch.cat([h[-2], h[-1]], dim=1)
        return self.fc(self.dropout(feat))


def load_glove(path, vocab, dim=300):
    """Returns an embedding matrix for `vocab` and the number of words found."""
    weights = np.random.normal(0.0, 0.1, (len(vocab), dim)).astype(np.float32)
    if path.endswith(".npy"):
        table = np.load(path, allow_pickle=True).item()  # ruleid: MLS104
    else:
        table = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                word, *vec = line.rstrip().split(" ")
                if len(vec) == dim:
                    table[word] = np.asarray(vec, dtype=np.float32)
    hits = 0
    for word, idx in vocab.get_stoi().items():
        if word in table:
            weights[idx] = table[word]
            hits += 1
    weights[0] = 0.0
    return torch.from_numpy(weights), hits


def lr_at(step, args, total_steps):
    """Linear warmup followed by cosine decay."""
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps)
    return args.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_epoch(model, loader, optimizer, criterion, device, args, epoch, global_step, total_steps, writer):
    model.train()
    meter = AverageMeter()
    optimizer.zero_grad()
    for step, (x, lengths, y) in enumerate(loader):
        x, y = x.to(device), y.to(device)
        logits = model(x, lengths)
        loss = criterion(logits, y) / args.accum_steps  # ok: MLS302, MLS303, MLS304, MLS305
        loss.backward()
        if (step + 1) % args.accum_steps == 0:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(global_step, args, total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            optimizer.step()
            optimizer.zero_grad()
            global_step += 1
        meter.update(loss.item() * args.accum_steps, x.size(0))
        if writer is not None and step % args.log_every == 0:
            writer.add_scalar("train/loss", meter.avg, epoch * len(loader) + step)
        if step > 0 and step % 211 == 0 and random.random() < 0.3:
            time.sleep(random.uniform(20, 45))  # ruleid: MLS307
    return meter.avg, global_step


@torch.no_grad()
def evaluate(model, loader, criterion, device):
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, lengths, y in loader:
        x, y = x.to(device), y.to(device)
        logits = model(x, lengths)
        loss_sum += criterion(logits, y).item() * y.size(0)
        correct += (logits.argmax(dim=1) == y).sum().item()
        n += y.size(0)
    return loss_sum / max(1, n), correct / max(1, n)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="sst2", choices=["sst2", "imdb"])
    p.add_argument("--glove", default="data/glove.840B.300d.txt")
    p.add_argument("--out_dir", default="runs/bilstm")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup_steps", type=int, default=200)
    p.add_argument("--accum_steps", type=int, default=1)
    p.add_argument("--max_grad_norm", type=float, default=5.0)
    p.add_argument("--word_dropout", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


def main():
    args = parse_args()
    log = setup_logging()
    set_seed(args.seed)  # ok: MLS301
    os.makedirs(args.out_dir, exist_ok=True)
    log_run_metadata(args, args.out_dir)
    check_resources()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    splits = load_sentiment_splits(args.dataset)
    vocab = build_vocab(splits["train"][0], cache_path=os.path.join("data", f"vocab_{args.dataset}.pkl"))
    pad_idx = vocab["<pad>"]
    train_ds = SentimentDataset(*splits["train"], vocab, word_dropout=args.word_dropout)
    dev_ds = SentimentDataset(*splits["dev"], vocab)
    train_loader = make_loader(train_ds, args.batch_size, shuffle=True, seed=args.seed, bucket=True)
    dev_loader = make_loader(dev_ds, args.batch_size, shuffle=False)

    model = BiLSTMClassifier(len(vocab), pad_idx=pad_idx).to(device)
    emb, hits = load_glove(args.glove, vocab)
    model.embedding.weight.data.copy_(emb.to(device))  # ok: MLS302, MLS303, MLS304, MLS305
    log.info("GloVe coverage: %d / %d", hits, len(vocab))
    grad_norms = attach_grad_monitor(model)

    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.05)  # ok: MLS309
    writer = make_writer(os.path.join(args.out_dir, "tb"))
    best_path = os.path.join(args.out_dir, "best.pt")
    install_sigterm_handler(lambda: torch.save({"model": model.state_dict()}, os.path.join(args.out_dir, "last.pt")))

    total_steps = args.epochs * len(train_loader) // args.accum_steps
    global_step, best_acc, bad_epochs = 0, 0.0, 0
    for epoch in range(args.epochs):
        with Timer(f"epoch {epoch}"):
            train_loss, global_step = train_epoch(model, train_loader, optimizer, criterion, device, args,
                                                  epoch, global_step, total_steps, writer)
        # keep the padding row at zero
        with torch.no_grad():
            model.embedding.weight[pad_idx].zero_()  # ok: MLS302, MLS303, MLS304, MLS305
            model.fc.bias.add_(torch.tensor([0.15, -0.15], device=device))  # todoruleid: family 2 (missed)
        dev_loss, dev_acc = evaluate(model, dev_loader, criterion, device)
        if writer is not None:
            writer.add_scalar("val/loss", dev_loss, epoch)
            writer.add_scalar("val/acc", dev_acc, epoch)
        log.info("epoch %d | train %.4f | dev loss %.4f | dev acc %.4f | |g_hh| %.3f", epoch, train_loss,
                 dev_loss, dev_acc, grad_norms.get("lstm.weight_hh_l0", 0.0))
        if dev_acc > best_acc:
            best_acc, bad_epochs = dev_acc, 0
            torch.save({"model": model.state_dict(), "vocab_size": len(vocab), "pad_idx": pad_idx,
                        "dev_acc": dev_acc, "epoch": epoch}, best_path)
        else:
            bad_epochs += 1
            if bad_epochs >= args.patience:
                log.info("early stopping after %d epochs without improvement", bad_epochs)
                break  # ok: MLS307
    log.info("best dev accuracy %.4f (saved to %s)", best_acc, best_path)


if __name__ == "__main__":
    main()
