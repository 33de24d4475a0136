# ruff: noqa
# Hold-out batch 560 (families 6/7, speech translation and text-to-speech with a CUDA extension build). Measured once in session 25 (round 149): 8/30 (27%) at medium+.
#!/usr/bin/env python
"""Train the acoustic model (tts) or the speech-to-unit translator (s2ut).

The HiFi-GAN vocoder is fine-tuned on ground-truth-aligned mels from the tts checkpoint
with the GAN loop in a separate script; both share dataset.py / models.py.
"""
import argparse
import json
import logging
import os
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, DistributedSampler

import dataset as D
import models as M

log = logging.getLogger("train")


def setup_dist():
    if "RANK" not in os.environ:
        return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dist.init_process_group("nccl")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    return dist.get_rank(), dist.get_world_size(), torch.device("cuda")


def build_tts(cfg, rank, world):
    train_rows = D.read_jsonl(cfg["train"])
    symbols = D.SymbolTable.from_manifest(train_rows)
    spk_map = {s: i for i, s in enumerate(sorted({r["speaker"] for r in train_rows}))}
    ds = D.TTSDataset(cfg["train"], symbols, spk_map, cfg["mel_stats"], spec_augment=cfg.get("spec_augment", True))
    va = D.TTSDataset(cfg["valid"], symbols, spk_map, cfg["mel_stats"], training=False)
    sampler = D.speaker_balanced_sampler(ds.rows, spk_map, len(ds.rows) // world) if cfg.get("balance_speakers") \
        else DistributedSampler(ds, world, rank, shuffle=True)
    model = M.FastSpeech2(len(symbols), len(spk_map), **cfg.get("model", {}))
    return model, ds, va, sampler, D.collate_tts


def build_s2ut(cfg, rank, world):
    n_units = cfg.get("n_units", 1000)
    langs = sorted({lang for pair in cfg["train"] for lang in pair.split("-")})
    lang2id = {l: n_units + D.NUM_SPECIAL + i for i, l in enumerate(langs)}
    ds = D.S2UTDataset(cfg["train"], cfg["units"], lang2id, n_units, tone_prob=cfg.get("tone_prob", 0.02))
    va = D.S2UTDataset(cfg["valid"], cfg["units"], lang2id, n_units, training=False)
    sampler = D.LanguageTemperatureSampler(ds.languages, cfg.get("temperature", 5.0), rank=rank, world_size=world)
    model = M.S2UTransformer(n_units + D.NUM_SPECIAL + len(langs), **cfg.get("model", {}))
    return model, ds, va, sampler, D.collate_s2ut


def tts_loss(out, b):
    mask = ~out["mel_pad"][:, None, :]
    l1 = lambda x: (F.l1_loss(x, b["mels"], reduction="none") * mask).sum() / (mask.sum() * x.size(1))
    sp = ~out["src_pad"]
    dur = F.mse_loss(out["log_dur"][sp], torch.log1p(b["durations"][sp].float()))
    fm = ~out["mel_pad"]
    pitch = F.mse_loss(out["pitch"][fm], b["pitch"][fm])
    energy = F.mse_loss(out["energy"][fm], b["energy"][fm])
    return l1(out["mel"]) + l1(out["mel_post"]) + dur + pitch + 0.1 * energy


def to_device(b, device):
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in b.items()}


def run_step(task, model, b, criterion):
    if task == "tts":
        out = model(b["phones"], b["phone_lens"], b["speakers"], b["durations"], b["pitch"], b["energy"], b["mels"].size(2))
        return tts_loss(out, b)
    logits = model(b["src"], b["src_lens"], b["prev_output"])
    return criterion(logits.transpose(1, 2), b["target"])


@torch.no_grad()
def evaluate(task, model, loader, criterion, device):
    model.eval()
    tot, n = 0.0, 0
    for b in loader:
        b = to_device(b, device)
        tot += run_step(task, model, b, criterion).item()
        n += 1
    model.train()
    stats = torch.tensor([tot, n], device=device, dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(stats)
    return (stats[0] / stats[1].clamp(min=1)).item()


def save_ckpt(path, model, opt, sched, step, best):
    raw = model.module if isinstance(model, DDP) else model
    tmp = path.with_suffix(".tmp")
    torch.save({"model": raw.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                "step": step, "best": best}, tmp)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["tts", "s2ut"], required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--out-dir", type=Path, default=Path("exp"))
    ap.add_argument("--max-steps", type=int, default=300_000)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup", type=int, default=4000)
    ap.add_argument("--eval-every", type=int, default=2000)
    ap.add_argument("--num-workers", type=int, default=6)
    ap.add_argument("--amp", action="store_true")
    args = ap.parse_args()
    cfg = json.loads(args.config.read_text())
    rank, world, device = setup_dist()
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank{rank}] %(message)s")
    torch.manual_seed(cfg.get("seed", 1234) + rank)
    out_dir = args.out_dir / cfg.get("name", args.config.stem)
    out_dir.mkdir(parents=True, exist_ok=True)

    model, ds, va, sampler, collate = (build_tts if args.task == "tts" else build_s2ut)(cfg, rank, world)
    loader = DataLoader(ds, args.batch_size, sampler=sampler, collate_fn=collate, num_workers=args.num_workers,
                        pin_memory=True, drop_last=True, persistent_workers=args.num_workers > 0)
    va_loader = DataLoader(va, args.batch_size, sampler=DistributedSampler(va, world, rank, shuffle=False),
                           collate_fn=collate, num_workers=2)
    model = model.to(device)
    if world > 1:
        model = DDP(model, device_ids=[device.index] if device.index is not None else None)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=D.PAD, label_smoothing=0.1)  # ok: MLS309
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / args.warmup, (args.warmup / (s + 1)) ** 0.5))
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)

    step, best, epoch = 0, float("inf"), 0
    last = out_dir / "last.pt"
    if last.exists():
        ck = torch.load(last, map_location="cpu", weights_only=True)
        (model.module if isinstance(model, DDP) else model).load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"]), sched.load_state_dict(ck["sched"])
        step, best = ck["step"], ck["best"]
        log.info("resumed from step %d", step)

    model.train()
    while step < args.max_steps:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        for b in loader:
            b = to_device(b, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                loss = run_step(args.task, model, b, criterion)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
            step += 1
            if step % 100 == 0 and rank == 0:
                log.info("step %d loss %.4f gnorm %.2f lr %.2e", step, loss.item(), gnorm, sched.get_last_lr()[0])
            if step % args.eval_every == 0:
                val = evaluate(args.task, model, va_loader, criterion, device)
                if rank == 0:
                    log.info("step %d valid loss %.4f (best %.4f)", step, val, best)
                    save_ckpt(last, model, opt, sched, step, min(best, val))
                    if val < best:
                        save_ckpt(out_dir / "best.pt", model, opt, sched, step, val)
                best = min(best, val)
            if step >= args.max_steps:
                break
        epoch += 1
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
