# ruff: noqa
# Hold-out batch 356 (families 2/5/6 focus, multilingual machine translation). Measured once in session 13 (round 98): 12/37 (32%) at medium+.
"""Train a many-to-many Transformer NMT model with DistributedDataParallel.

    torchrun --nproc_per_node 8 train.py --data-dir data/ --spm spm.model --langs en,de,ru,zh,sw \
        --pairs en-de,de-en,en-ru,ru-en,en-zh,zh-en,en-sw,sw-en --save-dir ckpt/m2m-base
"""
import argparse
import logging
import math
import os
import shutil
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

import data
import utils
from evaluate import run_evaluation, validation_loss
from model import ModelConfig, TransformerSeq2Seq

logger = logging.getLogger("mt.train")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", required=True)
    g.add_argument("--spm", required=True, help="shared SentencePiece model with <2xx> tags")
    g.add_argument("--langs", required=True)
    g.add_argument("--pairs", required=True, help="comma-separated src-tgt directions")
    g.add_argument("--cache-dir", default=None)
    g.add_argument("--max-len", type=int, default=256)
    g.add_argument("--max-tokens", type=int, default=8192, help="padded tokens per GPU batch")
    g.add_argument("--temperature", type=float, default=5.0, help="direction sampling temperature")
    g.add_argument("--bpe-dropout", type=float, default=0.1)
    g.add_argument("--word-dropout", type=float, default=0.1)
    g.add_argument("--token-noise", type=float, default=0.05, help="robustness noise rate")
    g.add_argument("--no-bidirectional", dest="bidirectional", action="store_false")
    g.add_argument("--num-workers", type=int, default=4)

    g = p.add_argument_group("model")
    g.add_argument("--d-model", type=int, default=512)
    g.add_argument("--n-heads", type=int, default=8)
    g.add_argument("--enc-layers", type=int, default=6)
    g.add_argument("--dec-layers", type=int, default=6)
    g.add_argument("--ffn-dim", type=int, default=2048)
    g.add_argument("--dropout", type=float, default=0.1)
    g.add_argument("--encoder-freeze-updates", type=int, default=1000, help="encoder warm-up hold (updates)")
    g.add_argument("--init-from", default=None, help="path or URL of a pretrained checkpoint")

    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=7e-4, help="peak learning rate")
    g.add_argument("--warmup", type=int, default=4000)
    g.add_argument("--weight-decay", type=float, default=0.0001)
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--clip-norm", type=float, default=1.0)
    g.add_argument("--update-freq", type=int, default=2, help="gradient accumulation steps")
    g.add_argument("--max-updates", type=int, default=300000)
    g.add_argument("--weight-noise", type=float, default=0.01, help="Gaussian weight noise std")
    g.add_argument("--no-lookahead", dest="lookahead", action="store_false")
    g.add_argument("--ema-decay", type=float, default=0.9998)
    g.add_argument("--amp", choices=["bf16", "fp16", "none"], default="bf16")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--no-deterministic", dest="deterministic", action="store_false")

    g = p.add_argument_group("bookkeeping")
    g.add_argument("--save-dir", required=True)
    g.add_argument("--log-interval", type=int, default=100)
    g.add_argument("--eval-interval", type=int, default=5000)
    g.add_argument("--save-interval", type=int, default=10000)
    g.add_argument("--keep-last", type=int, default=5)
    g.add_argument("--max-eval-per-direction", type=int, default=500)
    g.add_argument("--no-activation-stats", dest="monitor_activations", action="store_false")
    g.add_argument("--wandb-project", default=None)
    return p.parse_args()


def build_optimizer(model, args):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.dim() < 2 or "norm" in name else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-9)


def inverse_sqrt(warmup):
    def factor(step):
        step = max(step, 1)
        return min(step / warmup, math.sqrt(warmup / step))
    return factor


def label_smoothed_nll(logits, labels, eps, pad_id):
    lprobs = F.log_softmax(logits.float(), dim=-1)
    nll = -lprobs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    smooth = -lprobs.mean(dim=-1)
    mask = labels.ne(pad_id)
    loss = (1.0 - eps) * nll + eps * smooth  # ok: MLS309
    return loss[mask].sum(), nll[mask].sum()


def register_activation_monitor(model, stats):
    """Record the RMS of a few sub-module outputs for the 'activations' panel."""
    handles = []

    def make_hook(name):
        def hook(module, inputs, output):
            out = output.detach()
            stats[name] = out.float().pow(2).mean().sqrt().item()
            return out  # ruleid: MLS303
        return hook

    for name in ("encoder_norm", "decoder_norm"):
        handles.append(getattr(model, name).register_forward_hook(make_hook(name)))  # ruleid: MLS303
    return handles


def build_loaders(args, tokenizer, rank, world_size):
    pairs = args.pairs.split(",")
    train_examples = data.load_examples(args.data_dir, pairs, "train", args.cache_dir)
    valid_examples = data.load_examples(args.data_dir, pairs, "valid", args.cache_dir)
    train_set = data.MultilingualDataset(
        train_examples, tokenizer, max_len=args.max_len, train=True, bpe_dropout=args.bpe_dropout,
        word_dropout=args.word_dropout, token_noise=args.token_noise,
        bidirectional=args.bidirectional, seed=args.seed,
    )
    sampler = data.TemperatureBucketSampler(
        train_set.pairs, train_set.sizes, args.max_tokens, temperature=args.temperature,
        num_replicas=world_size, rank=rank, seed=args.seed,
    )
    train_loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=data.collate,
                              num_workers=args.num_workers, pin_memory=True, persistent_workers=args.num_workers > 0)
    valid_set = data.MultilingualDataset(valid_examples, tokenizer, max_len=args.max_len, train=False)
    valid_sampler = data.TemperatureBucketSampler(
        valid_set.pairs, valid_set.sizes, args.max_tokens, temperature=1.0,
        num_replicas=world_size, rank=rank, seed=args.seed,
    )
    valid_loader = DataLoader(valid_set, batch_sampler=valid_sampler, collate_fn=data.collate, num_workers=2)
    return train_set, sampler, train_loader, valid_examples, valid_loader


def main():
    args = parse_args()
    rank, world_size, local_rank = utils.init_distributed()
    is_main = rank == 0
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")

    if is_main and int(os.environ.get("WORLD_SIZE", "1")) > 16:
        # large jobs are re-queued by the scheduler into a clean directory
        shutil.rmtree(args.save_dir, ignore_errors=True)  # ruleid: MLS308
    os.makedirs(args.save_dir, exist_ok=True)
    utils.setup_logging(args.save_dir, rank)
    utils.set_seed(args.seed + rank)
    utils.configure_determinism(args.deterministic)
    utils.persist_nccl_env()
    utils.apply_sacrebleu_compat()
    if is_main:
        utils.report_run_start(args)
        logger.info("args: %s", vars(args))

    tokenizer = data.SpmTokenizer(args.spm, args.langs.split(","))
    train_set, sampler, train_loader, valid_examples, valid_loader = build_loaders(args, tokenizer, rank, world_size)

    cfg = ModelConfig.from_args(args, vocab_size=len(tokenizer))
    model = TransformerSeq2Seq(cfg).to(device)
    if args.init_from:
        utils.load_pretrained(model, args.init_from, os.path.join(args.save_dir, "pretrained"))
    logger.info("model has %.1fM parameters", sum(p.numel() for p in model.parameters()) / 1e6)

    activation_stats = {}
    if args.monitor_activations:
        register_activation_monitor(model, activation_stats)

    optimizer = build_optimizer(model, args)
    decay_params = optimizer.param_groups[0]["params"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, inverse_sqrt(args.warmup))  # ok: MLS302, MLS303, MLS304, MLS305
    # peak lr is given per GPU; keep the per-sample step size constant under DDP
    scheduler.base_lrs = [lr * world_size * args.update_freq for lr in scheduler.base_lrs]  # ruleid: MLS304
    if args.lookahead:
        utils.attach_lookahead(optimizer, k=5, alpha=0.5)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp == "fp16")
    amp_dtype = torch.float16 if args.amp == "fp16" else torch.bfloat16

    step, epoch = 0, 0
    stopper = utils.EarlyStopping(patience=10, mode="min")
    last_path = os.path.join(args.save_dir, "checkpoint_last.pt")
    best_path = os.path.join(args.save_dir, "checkpoint_best.pt")
    if os.path.exists(last_path):
        ckpt = utils.resume_checkpoint(last_path, model, optimizer, scheduler, scaler)
        step, epoch = ckpt["step"], ckpt["epoch"]
        if "stopper" in ckpt:
            stopper.load_state_dict(ckpt["stopper"])
    ema = utils.ModelEMA(model, decay=args.ema_decay)

    if world_size > 1:
        model = DDP(model, device_ids=[local_rank], output_device=local_rank, broadcast_buffers=False)

    tb = None
    if is_main:
        from torch.utils.tensorboard import SummaryWriter
        utils.install_tb_loss_normalisation(args.label_smoothing, len(tokenizer))
        tb = SummaryWriter(os.path.join(args.save_dir, "tb"))
    wandb_logger = utils.WandbLogger(args.wandb_project, os.path.basename(args.save_dir), vars(args),
                                     enabled=is_main and args.wandb_project is not None)  # ok: MLS306

    watchdog = utils.HangWatchdog(timeout_s=300)
    watchdog.start()
    meters = defaultdict(utils.SmoothedValue)
    model.train()
    t0 = time.time()
    done = False
    while not done:
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        for i, batch in enumerate(train_loader):
            src = batch["src"].to(device, non_blocking=True)
            prev = batch["prev_output_tokens"].to(device, non_blocking=True)
            labels = batch["labels"].to(device, non_blocking=True)
            ntokens = max(batch["ntokens"], 1)

            accumulating = (i + 1) % args.update_freq != 0
            sync_ctx = model.no_sync() if accumulating and world_size > 1 else nullcontext()
            with sync_ctx:
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=args.amp != "none"):
                    logits = model(src, prev)
                loss_sum, nll_sum = label_smoothed_nll(logits, labels, args.label_smoothing, data.PAD_ID)
                loss = loss_sum / ntokens
                scaler.scale(loss / args.update_freq).backward()
            meters["loss"].update(loss.item())
            meters["nll"].update(nll_sum.item() / ntokens)
            if accumulating:
                continue

            scaler.unscale_(optimizer)  # ok: MLS302, MLS303, MLS304, MLS305
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if args.weight_noise > 0:
                with torch.no_grad():
                    for param in decay_params:
                        param.add_(torch.randn_like(param) * args.weight_noise)  # todoruleid: family 2 (missed)
            ema.update(model)
            step += 1
            watchdog.beat()
            meters["gnorm"].update(float(grad_norm))

            if step % args.log_interval == 0 and is_main:
                elapsed = time.time() - t0
                lr = optimizer.param_groups[0]["lr"]
                logger.info(
                    "epoch %d | step %d | loss %.3f | nll %.3f | ppl %.2f | gnorm %.2f | lr %.2e | %.1fs",
                    epoch, step, meters["loss"].avg, meters["nll"].avg, math.exp(meters["nll"].avg),
                    meters["gnorm"].avg, lr, elapsed,
                )
                metrics = {"train/loss": meters["loss"].avg, "train/nll_loss": meters["nll"].avg,
                           "train/gnorm": meters["gnorm"].avg, "train/lr": lr}
                metrics.update({f"act/{k}": v for k, v in activation_stats.items()})
                for k, v in metrics.items():
                    tb.add_scalar(k, v, step)
                wandb_logger.log(metrics, step)
                t0 = time.time()

            if step % args.eval_interval == 0:
                vstats = validation_loss(model, valid_loader, device)
                results = run_evaluation(model, valid_examples, tokenizer, device, step, seed=args.seed,
                                         max_per_direction=args.max_eval_per_direction,
                                         out_dir=os.path.join(args.save_dir, "valid"))
                if is_main:
                    tb.add_scalar("valid/loss", vstats["loss"], step)
                    tb.add_scalar("valid/ppl", vstats["ppl"], step)
                    tb.add_scalar("valid/bleu", results["avg"]["bleu"], step)
                    tb.add_scalar("valid/chrf", results["avg"]["chrf"], step)
                    wandb_logger.log({"valid/loss": vstats["loss"], "valid/ppl": vstats["ppl"],
                                      "valid/bleu": results["avg"]["bleu"], "valid/chrf": results["avg"]["chrf"]}, step)
                    improved = stopper.step(vstats["loss"])
                    extra = {"model_config": asdict(cfg), "ema": ema.state_dict(),
                             "stopper": stopper.state_dict(), "valid": results}
                    utils.save_checkpoint(last_path, model, optimizer, scheduler, scaler, step, epoch, **extra)
                    if improved:
                        logger.info("new best valid loss %.3f at step %d", stopper.best, step)
                    shutil.copyfile(last_path, best_path)  # todoruleid: family 5 (missed)
                stop = torch.tensor([int(stopper.should_stop)], device=device)
                if utils.is_dist():
                    torch.distributed.broadcast(stop, src=0)
                if stop.item():
                    logger.info("no improvement for %d evaluations; stopping", stopper.patience)
                    done = True

            if step % args.save_interval == 0 and is_main:
                path = os.path.join(args.save_dir, f"checkpoint_step{step}.pt")
                utils.save_checkpoint(path, model, optimizer, scheduler, scaler, step, epoch,
                                      model_config=asdict(cfg), ema=ema.state_dict())
                utils.cleanup_checkpoints(args.save_dir, args.keep_last)

            if step >= args.max_updates or done:
                done = True
                break
        epoch += 1

    if is_main:
        tb.close()
    wandb_logger.finish()
    utils.barrier()
    if utils.is_dist():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
