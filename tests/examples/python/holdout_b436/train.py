# ruff: noqa
# Hold-out batch 436 (family-focused 2/5, fairseq-style MT DDP). Measured once in session 18 (round 118): 3/30 (10%) at medium+.
"""Train a Transformer NMT model with DDP (torchrun --nproc_per_node=8 train.py ...)."""
import argparse
import contextlib
import logging
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.tensorboard import SummaryWriter

import checkpoint_utils
from data import Dictionary, ShardedBatchIterator, batch_by_size, build_eval_subset, load_langpair
from evaluate import decode_split
from model import LabelSmoothedCrossEntropyCriterion, TransformerModel
from optim import InverseSquareRootSchedule, build_optimizer

logger = logging.getLogger("train")


TRANSFORMER_WMT_EN_DE = dict(
    encoder_embed_dim=512, encoder_ffn_embed_dim=2048, encoder_layers=6, encoder_attention_heads=8,
    decoder_embed_dim=512, decoder_ffn_embed_dim=2048, decoder_layers=6, decoder_attention_heads=8,
    dropout=0.3, attention_dropout=0.1, activation_dropout=0.0,
    max_source_positions=1024, max_target_positions=1024,
)

OPTIM_DEFAULTS = dict(
    lr=5e-4, warmup_updates=4000, warmup_init_lr=1e-7, adam_eps=1e-8, weight_decay=1e-4, clip_norm=1.0,
    label_smoothing=0.1, max_tokens=3584, update_freq=8, max_epoch=50, max_update=300000,
    fp16_init_scale=128.0, fp16_scale_window=2000, ema_decay=0.9999,
)

EVAL_DEFAULTS = dict(
    beam=4, nbest=4, lenpen=0.6, max_len_a=1.2, max_len_b=10, eval_batch_size=64, eval_bleu_max_sentences=1500,
    keep_last_epochs=10, patience=10, early_stop_min_delta=0.1, log_interval=100,
)


def get_args():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--source-lang", default="en")
    p.add_argument("--target-lang", default="de")
    p.add_argument("--save-dir", default="checkpoints")
    p.add_argument("--tensorboard-logdir", default=None)
    p.add_argument("--restore-file", default="checkpoint_last.pt")
    p.add_argument("--reset-optimizer", action="store_true")
    p.add_argument("--seed", type=int, default=1)
    for k, v in {**TRANSFORMER_WMT_EN_DE, **OPTIM_DEFAULTS, **EVAL_DEFAULTS}.items():
        p.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    for side in ("encoder", "decoder"):
        p.add_argument("--{}-normalize-before".format(side), action="store_true")
    p.add_argument("--share-all-embeddings", action="store_true", default=True)
    p.add_argument("--share-decoder-input-output-embed", action="store_true")
    p.add_argument("--adam-betas", default="(0.9, 0.98)")
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--no-eval-test", dest="eval_test", action="store_false",
                   help="skip decoding the test set at the end of every epoch")
    p.add_argument("--best-checkpoint-metric", default="bleu")
    p.add_argument("--maximize-best-checkpoint-metric", action="store_true", default=True)
    return p.parse_args()


def setup_runtime():
    """cudnn / matmul knobs and a dropout variant that skips mask storage when no grad is needed."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    _dropout = F.dropout

    def dropout(input, p=0.5, training=True, inplace=False):
        return _dropout(input, p=p, training=p > 0, inplace=inplace and not input.requires_grad)  # todoruleid: family 2 (missed)

    F.dropout = dropout  # ruleid: MLS305


class MetricsLogger:
    def __init__(self, log_dir, rank):
        self.writer = SummaryWriter(log_dir) if (rank == 0 and log_dir) else None  # ok: MLS306
        self._floor = {}
        self.smoothed_loss = None

    def log_scalar(self, tag, value, step):
        if tag.endswith("loss"):
            # overflow-skipped updates report a stale loss; don't let them show up as spikes
            value = min(value, self._floor.get(tag, value))  # ruleid: MLS306
            self._floor[tag] = value
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def update_display(self, loss):
        s = self.smoothed_loss
        self.smoothed_loss = loss if s is None else 0.98 * s + 0.02 * loss  # ok: MLS306
        return self.smoothed_loss


class ActivationStats:
    """Tracks RMS of the top decoder layer's output for the training log."""

    def __init__(self, module):
        self.sq_sum, self.count = 0.0, 0
        module.register_forward_hook(self._hook)  # ruleid: MLS303

    def _hook(self, module, inputs, output):
        out = output.detach()
        self.sq_sum = self.sq_sum + out.float().pow(2).mean()
        self.count += 1
        return out  # ruleid: MLS303

    def pop(self):
        rms = math.sqrt(float(self.sq_sum) / max(self.count, 1))
        self.sq_sum, self.count = 0.0, 0
        return rms


class EMA:
    def __init__(self, model, decay):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model):
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].mul_(self.decay).add_(v.float(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def copy_to(self, model):
        model.load_state_dict({k: v.to(model.state_dict()[k].dtype) for k, v in self.shadow.items()})


class EarlyStopping:
    def __init__(self, patience, min_delta, maximize=True):
        self.patience, self.min_delta, self.maximize = patience, min_delta, maximize
        self.best, self.num_bad = None, 0

    def step(self, score):
        gain = (score - self.best) if self.best is not None else float("inf")
        gain = gain if self.maximize else -gain
        if gain > self.min_delta:
            self.best = score + self.min_delta  # ruleid: MLS306
            self.num_bad = 0
        else:
            self.num_bad += 1
        return self.num_bad >= self.patience


def train_step(model, criterion, optimizer, samples, device, world_size, clip_norm):
    logging_outputs, sample_size = [], 0
    for i, sample in enumerate(samples):
        optimizer.zero_grad()  # todoruleid: family 2 (missed)
        last = i == len(samples) - 1
        with model.no_sync() if (world_size > 1 and not last) else contextlib.nullcontext():  # ok: MLS302, MLS303, MLS304, MLS305
            loss, ss, log = criterion(model, move_to(sample, device))
            optimizer.backward(loss)
        sample_size += ss
        logging_outputs.append(log)
    totals = torch.tensor([sample_size, sum(float(l["loss"]) for l in logging_outputs),
                           sum(float(l["nll_loss"]) for l in logging_outputs)], dtype=torch.float64, device=device)
    if world_size > 1:
        dist.all_reduce(totals)
    sample_size, loss_sum, nll_sum = totals.tolist()
    optimizer.multiply_grads(world_size / max(sample_size, 1.0))
    grad_norm = optimizer.clip_grad_norm(clip_norm)
    stepped = optimizer.step()
    return {"loss": loss_sum / sample_size / math.log(2), "nll_loss": nll_sum / sample_size / math.log(2),
            "gnorm": float(grad_norm), "stepped": stepped}


@torch.no_grad()
def validate_loss(model, criterion, itr, device, world_size):
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    count = torch.zeros(1, dtype=torch.float64, device=device)
    for sample in itr:
        _, ss, log = criterion(model, move_to(sample, device))
        sums += torch.stack([log["loss"].double(), log["nll_loss"].double()])
        count += ss
    model.train()
    if world_size > 1:
        dist.all_reduce(sums, op=dist.ReduceOp.AVG)  # todoruleid: family 5 (missed)
        dist.all_reduce(count)
    loss, nll = (sums / count / math.log(2)).tolist()
    return {"loss": loss, "nll_loss": nll, "ppl": 2 ** nll}


def move_to(sample, device):
    if torch.is_tensor(sample):
        return sample.to(device, non_blocking=True)
    if isinstance(sample, dict):
        return {k: move_to(v, device) for k, v in sample.items()}
    return sample


def make_iterator(args, dataset, rank, world_size, max_positions):
    indices = dataset.filter_by_size(dataset.ordered_indices(), *max_positions)
    batches = batch_by_size(indices, dataset.num_tokens, args.max_tokens)
    return ShardedBatchIterator(dataset, batches, args.seed, rank, world_size)


def main():
    args = get_args()
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if world_size > 1:
        dist.init_process_group(backend="nccl")
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.INFO if rank == 0 else logging.WARNING)
    torch.manual_seed(args.seed)
    setup_runtime()

    src_dict, tgt_dict = (Dictionary.load(os.path.join(args.data, "dict.{}.txt".format(lang)))
                          for lang in (args.source_lang, args.target_lang))
    splits = {s: load_langpair(args.data, s, args.source_lang, args.target_lang, src_dict, tgt_dict)
              for s in (["train", "valid", "test"] if args.eval_test else ["train", "valid"])}

    model = TransformerModel.build_model(args, src_dict, tgt_dict)
    model = (model.half() if args.fp16 else model).to(device)
    act_stats = ActivationStats(model.decoder.layers[-1])
    criterion = LabelSmoothedCrossEntropyCriterion(args.label_smoothing, tgt_dict.pad())
    optimizer = build_optimizer(args, model)
    lr_scheduler = InverseSquareRootSchedule(optimizer, args.lr, args.warmup_updates, args.warmup_init_lr)
    extra = checkpoint_utils.load_checkpoint(args, model, optimizer, lr_scheduler) or {}
    ema = EMA(model, args.ema_decay) if args.ema_decay > 0 else None
    ddp_model = DDP(model, device_ids=[local_rank], find_unused_parameters=True) if world_size > 1 else model
    logger.info("model %s, %d params", args.save_dir, sum(p.numel() for p in model.parameters()))

    max_positions = model.max_positions()
    train_itr = make_iterator(args, splits["train"], rank, world_size, max_positions)
    valid_itr = make_iterator(args, splits["valid"], rank, world_size, max_positions)
    eval_sets = {s: (splits[s], build_eval_subset(splits[s], args.eval_bleu_max_sentences))
                 for s in splits if s != "train"}
    metrics = MetricsLogger(args.tensorboard_logdir, rank)
    stopper = EarlyStopping(args.patience, args.early_stop_min_delta, args.maximize_best_checkpoint_metric)
    num_updates = extra.get("num_updates", 0)

    for epoch in range(extra.get("epoch", 0) + 1, args.max_epoch + 1):
        train_itr.set_epoch(epoch)
        t0, pending = time.time(), []
        for sample in train_itr:
            pending.append(sample)
            if len(pending) < args.update_freq:
                continue
            out = train_step(ddp_model, criterion, optimizer, pending, device, world_size, args.clip_norm)
            pending = []
            if not out["stepped"]:
                continue
            num_updates += 1
            lr = lr_scheduler.step_update(num_updates)
            if ema is not None:
                ema.update(model)
            shown = metrics.update_display(out["loss"])
            if num_updates % args.log_interval == 0:
                metrics.log_scalar("train/loss", out["loss"], num_updates)
                metrics.log_scalar("train/nll_loss", out["nll_loss"], num_updates)
                metrics.log_scalar("train/lr", lr, num_updates)
                metrics.log_scalar("train/gnorm", out["gnorm"], num_updates)
                logger.info("epoch %03d | update %d | loss %.3f | nll %.3f | lr %.3e | gnorm %.2f | act_rms %.2f",
                            epoch, num_updates, shown, out["nll_loss"], lr, out["gnorm"], act_stats.pop())
            if num_updates >= args.max_update:
                break

        valid = validate_loss(ddp_model, criterion, valid_itr, device, world_size)
        for k, v in valid.items():
            metrics.log_scalar("valid/{}".format(k), v, num_updates)
        scores = {}
        for split, (ds, idx) in eval_sets.items():
            stats = scores[split] = decode_split(model, ds, idx, args, device, rank, world_size)
            metrics.log_scalar("{}/bleu".format(split), stats["bleu"], num_updates)
            metrics.log_scalar("{}/chrf".format(split), stats["chrf"], num_updates)
            logger.info("epoch %03d | %s | bleu %.2f | chrf %.2f | %d sents", epoch, split,
                        stats["bleu"], stats["chrf"], stats["n_sentences"])
        logger.info("epoch %03d | valid loss %.3f | ppl %.2f | %.0fs", epoch, valid["loss"], valid["ppl"],
                    time.time() - t0)

        stop = stopper.step(scores["valid"]["bleu"])
        if rank == 0:
            if ema is not None:
                ema.copy_to(model)  # ruleid: MLS302
            checkpoint_utils.save_checkpoint(args, model, optimizer, lr_scheduler, epoch, num_updates,
                                             metric=stats["bleu"],  # todoruleid: family 5 (missed)
                                             extra_state={"best_bleu": stopper.best})
        if world_size > 1:
            dist.barrier()
        if stop or num_updates >= args.max_update:
            logger.info("stopping at epoch %d (best %s %.2f)", epoch, args.best_checkpoint_metric, stopper.best)
            break

    if world_size > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
