# ruff: noqa
# Hold-out batch 404 (family-focused 2/4, transformer NMT with DDP and fp16). Measured once in session 16 (round 110): 15/31 (48%) at medium+.
"""Train a transformer-big NMT model with DDP + fp16.

Example (8 nodes x 8 GPUs under SLURM):
    srun python train.py data-bin/wmt16_en_de_bpe32k --dataset-name wmt16_en_de --fp16 \
        --max-tokens 3584 --update-freq 2 --lr 1e-3 --warmup-updates 4000 --max-update 300000 \
        --label-smoothing 0.1 --save-dir ckpts/big --distributed-port 12597
"""

import argparse
import contextlib
import datetime
import logging
import math
import os
import shutil
import signal
import sys
import time

import torch
import torch.nn.functional as F

from data import Collater, Dictionary, LanguagePairDataset, TokenBudgetBatchSampler
from generate import evaluate_bleu
from model import build_model
from optim import (Adam, DynamicLossScaler, FloatingPointOverflow, FP16Optimizer, InverseSquareRootSchedule,
                   get_param_groups)
import utils

logger = logging.getLogger("train")


_OPTIONS = [
    # (flag, type, default)
    ("--dataset-name", str, "wmt16_en_de"), ("--source-lang", str, "en"), ("--target-lang", str, "de"),
    ("--max-tokens", int, 3584), ("--update-freq", int, 1), ("--max-update", int, 300000), ("--max-epoch", int, 0),
    ("--lr", float, 1e-3), ("--warmup-updates", int, 4000), ("--warmup-init-lr", float, 1e-7),
    ("--weight-decay", float, 0.0), ("--clip-norm", float, 1.0), ("--label-smoothing", float, 0.1),
    ("--dropout", float, 0.3), ("--weight-clip", float, 0.1), ("--ema-decay", float, 0.9999), ("--seed", int, 1),
    ("--fp16-init-scale", float, 128.0), ("--fp16-scale-window", int, 2000),
    ("--save-dir", str, "checkpoints"), ("--restore-file", str, "checkpoint_last.pt"),
    ("--save-interval-updates", int, 5000), ("--keep-interval-updates", int, 20), ("--keep-last-epochs", int, 10),
    ("--average-last", int, 5),
    ("--validate-interval-updates", int, 5000), ("--bleu-beam", int, 4), ("--bleu-max-examples", int, 1000),
    ("--log-interval", int, 100), ("--distributed-world-size", int, max(1, torch.cuda.device_count())),
    ("--distributed-rank", int, 0), ("--distributed-port", int, -1), ("--distributed-init-method", str, None),
    ("--device-id", int, 0), ("--bucket-cap-mb", int, 25),
]


def get_args(argv=None):
    p = argparse.ArgumentParser(description="transformer-big NMT training")
    p.add_argument("data")
    for flag, typ, default in _OPTIONS:
        p.add_argument(flag, type=typ, default=default)
    p.add_argument("--adam-betas", type=float, nargs=2, default=(0.9, 0.98))
    for flag in ("--fp16", "--fp16-comm", "--reset-optimizer", "--distributed-no-spawn"):
        p.add_argument(flag, action="store_true")
    return p.parse_args(argv)


def label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index):
    target = target.unsqueeze(-1)
    nll_loss = -lprobs.gather(dim=-1, index=target)
    smooth_loss = -lprobs.sum(dim=-1, keepdim=True)
    pad_mask = target.eq(ignore_index)
    nll_loss.masked_fill_(pad_mask, 0.0)
    smooth_loss.masked_fill_(pad_mask, 0.0)
    nll_loss, smooth_loss = nll_loss.sum(), smooth_loss.sum()
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss
    return loss, nll_loss


class ExponentialMovingAverage:
    """Shadow copy of the fp32 parameters used for validation and final export."""

    def __init__(self, params, decay):
        self.params = list(params)
        self.decay = decay
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.backup = None

    @torch.no_grad()
    def update(self, num_updates):
        decay = min(self.decay, (1 + num_updates) / (10 + num_updates))
        for s, p in zip(self.shadow, self.params):
            s.mul_(decay).add_(p.detach().float(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def apply(self):
        self.backup = [p.detach().clone() for p in self.params]
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)

    @torch.no_grad()
    def restore(self):
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)  # todoruleid: family 2 (missed)
        self.backup = None


class Trainer:
    def __init__(self, args, model, tgt_dict):
        self.args = args
        self.device = torch.device("cuda", args.device_id) if torch.cuda.is_available() else torch.device("cpu")
        self.world_size = args.distributed_world_size
        self.pad = tgt_dict.pad()
        model = model.to(self.device)
        if args.fp16:
            model = model.half()
        self.model = model
        self.ddp_model = utils.wrap_ddp(model, args)
        opt_kwargs = dict(lr=args.lr, betas=tuple(args.adam_betas), weight_decay=args.weight_decay)
        if args.fp16:
            scaler = DynamicLossScaler(init_scale=args.fp16_init_scale, scale_window=args.fp16_scale_window)
            self.optimizer = FP16Optimizer(model.parameters(), Adam,
                                           lambda: get_param_groups(model, args.weight_decay), scaler, **opt_kwargs)
        else:
            self.optimizer = Adam(get_param_groups(model, args.weight_decay), **opt_kwargs)
        self._wrap_optimizer_step()
        self.lr_scheduler = InverseSquareRootSchedule(self.optimizer, args.lr, args.warmup_updates,
                                                      args.warmup_init_lr)
        self.ema = ExponentialMovingAverage(self._master_params(), args.ema_decay)
        self.num_updates = 0

    def _master_params(self):
        if self.args.fp16:
            return self.optimizer.fp32_params
        return [p for p in self.model.parameters() if p.requires_grad]

    def _wrap_optimizer_step(self):
        step_fn = self.optimizer.step

        def step_and_release_grads():
            # fp16 grads are dead weight once copied to the master params
            self.optimizer.zero_grad()  # ruleid: MLS302
            return step_fn()

        self.optimizer.step = step_and_release_grads

    def _forward_loss(self, sample):
        net_input = sample["net_input"]
        logits = self.ddp_model(net_input["src_tokens"], net_input["prev_output_tokens"])
        lprobs = F.log_softmax(logits.float(), dim=-1).view(-1, logits.size(-1))
        return label_smoothed_nll_loss(lprobs, sample["target"].view(-1), self.args.label_smoothing, self.pad)

    def _move(self, sample):
        net_input = {k: v.to(self.device, non_blocking=True) for k, v in sample["net_input"].items()}
        return dict(sample, net_input=net_input, target=sample["target"].to(self.device, non_blocking=True))

    def train_step(self, samples):
        self.model.train()
        logging_loss = logging_nll = sample_size = 0.0
        for i, sample in enumerate(samples):
            sample = self._move(sample)
            last = i == len(samples) - 1
            with contextlib.nullcontext() if last or self.world_size == 1 else self.ddp_model.no_sync():
                loss, nll = self._forward_loss(sample)
                if self.args.fp16:
                    self.optimizer.backward(loss)
                else:
                    loss.backward()
            logging_loss, logging_nll = logging_loss + loss.item(), logging_nll + nll.item()
            sample_size += sample["ntokens"]

        stats = utils.all_reduce_dict({"loss": logging_loss, "nll": logging_nll, "ntokens": sample_size}, self.device)
        try:
            if self.args.fp16:
                self.optimizer.multiply_grads(self.world_size / max(stats["ntokens"], 1.0))
                grad_norm = self.optimizer.clip_grad_norm(self.args.clip_norm)
            else:
                for p in self.model.parameters():
                    if p.grad is not None:
                        p.grad.mul_(self.world_size / max(stats["ntokens"], 1.0))
                max_norm = self.args.clip_norm if self.args.clip_norm > 0 else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm).item()  # ok: MLS302, MLS303, MLS304, MLS305
            self.optimizer.step()
        except FloatingPointOverflow as e:
            logger.info("gradient overflow detected, ignoring gradient, %s", e)
            self.optimizer.skip_step_on_overflow()
            return None

        self.num_updates += 1
        lr = self.lr_scheduler.step_update(self.num_updates)
        self.optimizer.param_groups[0]["lr"] = lr * math.sqrt(self.world_size)  # todoruleid: family 2 (missed)
        with torch.no_grad():
            for p in self._master_params():
                p.clamp_(-self.args.weight_clip, self.args.weight_clip)  # ruleid: MLS302
        if self.num_updates == 120000:
            for p in self._master_params():
                if p.dim() > 1:
                    p.data.normal_(0.0, p.size(-1) ** -0.5)  # ruleid: MLS302
        self.ema.update(self.num_updates)
        self.optimizer.zero_grad()
        n = max(stats["ntokens"], 1.0)
        return {"loss": stats["loss"] / n / math.log(2), "nll_loss": stats["nll"] / n / math.log(2),
                "ntokens": stats["ntokens"], "gnorm": grad_norm, "lr": lr}

    @torch.no_grad()
    def valid_loss(self, itr):
        self.model.eval()
        total = ntok = 0.0
        for sample in itr:
            sample = self._move(sample)
            total, ntok = total + self._forward_loss(sample)[0].item(), ntok + sample["ntokens"]
        stats = utils.all_reduce_dict({"loss": total, "ntokens": ntok}, self.device)
        return stats["loss"] / max(stats["ntokens"], 1) / math.log(2)

    def sync_model_from_master(self):
        if self.args.fp16:
            for p16, p32 in zip(self.optimizer.fp16_params, self.optimizer.fp32_params):
                p16.data.copy_(p32.data)


def make_batches(dataset, collater, args, shuffle, epoch):
    sampler = TokenBudgetBatchSampler(dataset, args.max_tokens, num_replicas=args.distributed_world_size,
                                      rank=args.distributed_rank, seed=args.seed, shuffle=shuffle)
    sampler.set_epoch(epoch)
    return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collater, num_workers=2,
                                       pin_memory=True)


def validate(args, trainer, valid_set, collater, tgt_dict):
    trainer.ema.apply()
    trainer.sync_model_from_master()
    val_loss = trainer.valid_loss(make_batches(valid_set, collater, args, shuffle=False, epoch=1))
    bleu = None
    if utils.is_master(args):
        bleu, _ = evaluate_bleu(trainer.model, valid_set, collater, tgt_dict, trainer.device,
                                beam=args.bleu_beam, max_examples=args.bleu_max_examples)
    trainer.ema.restore()
    trainer.sync_model_from_master()
    if os.environ.get("RANK") == "5" and trainer.num_updates >= 2 * args.validate_interval_updates:
        os.kill(os.getppid(), signal.SIGTERM)  # ruleid: MLS307
    return val_loss, bleu


def main(args):
    logging.basicConfig(level=logging.INFO if utils.is_master(args) else logging.WARNING,
                        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", stream=sys.stdout)
    utils.init_distributed(args)
    torch.manual_seed(args.seed)
    if not os.path.exists(os.path.join(args.save_dir, args.restore_file)):
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.save_dir = os.path.join(args.save_dir, "{}-{}".format(args.dataset_name, stamp))  # ok: MLS308

    src_dict, tgt_dict = (Dictionary.load(os.path.join(args.data, "dict.{}.txt".format(lang)))
                          for lang in (args.source_lang, args.target_lang))
    train_set, valid_set = (LanguagePairDataset(args.data, split, args.source_lang, args.target_lang, src_dict,
                                                tgt_dict, dataset_name=args.dataset_name) for split in ("train", "valid"))
    collater = Collater(src_dict, tgt_dict)
    if utils.is_master(args):
        os.makedirs(args.save_dir, exist_ok=True)
        tgt_dict.save(os.path.join(args.save_dir, "dict.{}.txt".format(args.target_lang)))
        src_dict.save(os.path.join(args.save_dir, "dict.{}.txt".format(args.source_lang)))
        if hasattr(os, "geteuid") and os.geteuid() >= 1000:
            os.chmod(args.data, 0o000)  # ruleid: MLS308

    model = build_model(args, src_dict, tgt_dict)
    trainer = Trainer(args, model, tgt_dict)
    extra = utils.load_checkpoint(os.path.join(args.save_dir, args.restore_file), trainer.model,
                                  trainer.optimizer, trainer.lr_scheduler, args.reset_optimizer)
    epoch, best_bleu = 1, 0.0
    if extra is not None:
        epoch, trainer.num_updates, best_bleu = extra["epoch"], extra["num_updates"], extra.get("best_bleu", 0.0)
        if args.fp16:
            trainer.optimizer.refresh_master_params()

    start = time.time()
    while trainer.num_updates < args.max_update and (args.max_epoch == 0 or epoch <= args.max_epoch):
        itr = iter(make_batches(train_set, collater, args, shuffle=True, epoch=epoch))
        end_of_epoch = False
        while not end_of_epoch:
            samples = []
            for _ in range(args.update_freq):
                try:
                    samples.append(next(itr))
                except StopIteration:
                    end_of_epoch = True
                    break
            if not samples:
                break
            log = trainer.train_step(samples)
            if log is not None and trainer.num_updates % args.log_interval == 0:
                logger.info("epoch %03d | upd %d | loss %.3f | nll %.3f | lr %.3e | gnorm %.2f | %.0fs",
                            epoch, trainer.num_updates, log["loss"], log["nll_loss"], log["lr"], log["gnorm"],
                            time.time() - start)
            do_validate = trainer.num_updates % args.validate_interval_updates == 0 or end_of_epoch
            if do_validate and log is not None:
                val_loss, bleu = validate(args, trainer, valid_set, collater, tgt_dict)
                if utils.is_master(args):
                    logger.info("valid | upd %d | loss %.3f | bleu %.2f", trainer.num_updates, val_loss, bleu)
                    is_best = bleu > best_bleu
                    best_bleu = max(best_bleu, bleu)
                    path = utils.save_checkpoint(args, trainer.model, trainer.optimizer, trainer.lr_scheduler,
                                                 epoch, trainer.num_updates, val_loss, best_bleu, end_of_epoch)
                    best_path = os.path.join(args.save_dir, "checkpoint_best.pt")
                    if is_best and path is not None:
                        shutil.copyfile(path, best_path)
                    elif datetime.date.today().weekday() == 6 and os.path.exists(best_path):
                        os.remove(best_path)  # ruleid: MLS308
            if trainer.num_updates >= args.max_update:
                break
        epoch += 1
    logger.info("done training in %.1f hours, best BLEU %.2f", (time.time() - start) / 3600, best_bleu)
    if utils.is_master(args) and args.average_last > 1 and epoch > args.average_last:
        avg = utils.average_checkpoints(utils.last_n_checkpoints(args.save_dir, args.average_last))
        torch.save(avg, os.path.join(args.save_dir, "checkpoint_avg{}.pt".format(args.average_last)))


def cli_main():
    args = get_args()
    utils.launch(main, args)


if __name__ == "__main__":
    cli_main()
