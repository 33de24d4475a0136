# ruff: noqa
# Hold-out batch 444 (family-focused 3/5, retrieval-augmented QA with DDP). Measured once in session 19 (round 120): 11/30 (37%) at medium+.
"""Two-stage open-domain QA fine-tuning: DPR retriever, then extractive reader.

Launch (per node):
    torchrun --nnodes=$NNODES --nproc_per_node=8 --rdzv_backend=c10d \
        --rdzv_endpoint=$MASTER:29500 train.py --fp16 --output_dir runs/nq
"""
import argparse
import datetime
import json
import logging
import os
import random
import shutil
import signal
import sys
import time
from typing import Dict

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from callbacks import (CheckpointManager, PlateauStopper, TBLogger, setup_logging,
                       write_final_results)
from data import (PassageStore, ReaderCollator, ReaderDataset, RetrieverCollator,
                  RetrieverDataset, load_dpr_json, worker_init_fn)
from dist_utils import (all_reduce_mean, barrier, broadcast_flag, cleanup, init_distributed,
                        install_hang_watchdog, is_main_process, save_on_master, wait_for_file)
from evaluate import evaluate_reader, evaluate_retriever
from models import LayerTimer, biencoder_nll_loss, build_models, reader_loss

logger = logging.getLogger("train")

_STATE: Dict = {"sigterm": False, "save_fn": None}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # data
    p.add_argument("--train_file", default="data/nq-train.json")
    p.add_argument("--dev_file", default="data/nq-dev.json")
    p.add_argument("--reader_train_file", default="data/nq-train-retrieved.json")
    p.add_argument("--reader_dev_file", default="data/nq-dev-retrieved.json")
    p.add_argument("--reader_test_file", default="")
    p.add_argument("--passages_db", default="data/psgs_w100.sqlite")
    p.add_argument("--scratch_dir", default="/tmp/odqa")
    p.add_argument("--max_dev", type=int, default=0)
    p.add_argument("--max_index_passages", type=int, default=0)
    # models
    p.add_argument("--q_model", default="bert-base-uncased")
    p.add_argument("--p_model", default="bert-base-uncased")
    p.add_argument("--reader_model", default="bert-base-uncased")
    p.add_argument("--q_len", type=int, default=64)
    p.add_argument("--p_len", type=int, default=256)
    p.add_argument("--reader_len", type=int, default=256)
    p.add_argument("--n_passages", type=int, default=24)
    p.add_argument("--max_answer_len", type=int, default=10)
    # optimisation
    p.add_argument("--retriever_steps", type=int, default=40000)
    p.add_argument("--reader_steps", type=int, default=30000)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--reader_batch_size", type=int, default=2)
    p.add_argument("--eval_batch_size", type=int, default=128)
    p.add_argument("--hard_negatives", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--reader_lr", type=float, default=1e-5)
    p.add_argument("--weight_decay", type=float, default=0.0)
    p.add_argument("--warmup_ratio", type=float, default=0.05)
    p.add_argument("--max_grad_norm", type=float, default=2.0)
    p.add_argument("--fp16", action="store_true")
    p.add_argument("--num_workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=12345)
    # bookkeeping
    p.add_argument("--output_dir", default="runs/odqa")
    p.add_argument("--log_every", type=int, default=50)
    p.add_argument("--eval_every", type=int, default=2000)
    p.add_argument("--recall_ks", type=int, nargs="+", default=[1, 5, 20, 100])
    p.add_argument("--keep_last", type=int, default=3)
    p.add_argument("--plateau_patience", type=int, default=20)
    p.add_argument("--loss_spike_thresh", type=float, default=8.0)
    p.add_argument("--min_recall", type=float, default=0.6)
    p.add_argument("--collapse_check_after", type=int, default=2000)
    p.add_argument("--time_limit_h", type=float, default=0.0)
    p.add_argument("--watchdog_hours", type=float, default=6.0)
    p.add_argument("--timer_settle_s", type=float, default=0.2)
    p.add_argument("--polite_hours", type=int, nargs=2, default=[9, 19])
    p.add_argument("--polite_sleep", type=float, default=0.5)
    # distributed
    p.add_argument("--init_retries", type=int, default=5)
    p.add_argument("--host_mem_gb", type=int, default=48)
    return p.parse_args()


def _on_sigterm(signum, frame):
    _STATE["sigterm"] = True


def _on_sigusr1(signum, frame):
    # SLURM sends USR1 ahead of the wall-clock limit: checkpoint, then hold for requeue
    logger.warning("USR1 received: checkpointing before requeue")
    if _STATE["save_fn"] is not None:
        _STATE["save_fn"]()
    os.kill(os.getpid(), signal.SIGSTOP)  # ruleid: MLS307


def stage_passages_locally(args) -> str:
    """Copy the passage DB to node-local scratch once per node; sqlite over NFS is slow."""
    os.makedirs(args.scratch_dir, exist_ok=True)
    local_db = os.path.join(args.scratch_dir, os.path.basename(args.passages_db))
    if args.local_rank == 0 and not os.path.exists(local_db):
        shutil.copyfile(args.passages_db, local_db + ".part")
        os.replace(local_db + ".part", local_db)
        barrier()  # ruleid: MLS307
    else:
        wait_for_file(local_db)
    return local_db


def make_optimizer(model: torch.nn.Module, lr: float, wd: float, total_steps: int,
                   warmup_ratio: float):
    no_decay = ("bias", "LayerNorm.weight")
    decay = [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)]
    rest = [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)]
    groups = [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, eps=1e-8)
    sched = get_linear_schedule_with_warmup(opt, int(warmup_ratio * total_steps), total_steps)
    return opt, sched


def infinite(loader, sampler):
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        for batch in loader:
            yield batch
        epoch += 1


# --- stage 1: retriever ---

def train_retriever(args, retriever, q_tok, store, tb: TBLogger, device, t_start: float):
    train_ex = load_dpr_json(args.train_file)
    dev_ex = load_dpr_json(args.dev_file, args.max_dev)
    ds = RetrieverDataset(train_ex, args.hard_negatives, store=store)
    sampler = DistributedSampler(ds, shuffle=True, seed=args.seed) if args.distributed else None
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler,
                        shuffle=sampler is None, num_workers=args.num_workers,
                        collate_fn=RetrieverCollator(q_tok, args.q_len, args.p_len),
                        worker_init_fn=worker_init_fn, pin_memory=True, drop_last=True,
                        persistent_workers=args.num_workers > 0)

    model = retriever.to(device)
    if args.distributed:
        model = DDP(model, device_ids=[args.local_rank], find_unused_parameters=False)
    opt, sched = make_optimizer(model, args.lr, args.weight_decay, args.retriever_steps,
                                args.warmup_ratio)
    scaler = torch.cuda.amp.GradScaler(enabled=args.fp16)
    stopper = PlateauStopper(args.plateau_patience, min_delta=1e-3, mode="min")
    best_recall = -1.0
    running_loss, running_n, running_correct, running_q = 0.0, 0, 0, 0

    def save_fn():
        save_on_master({"model": (model.module if args.distributed else model).state_dict(),
                        "optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
                       os.path.join(args.output_dir, "retriever_last.pt"))
    _STATE["save_fn"] = save_fn

    batches = infinite(loader, sampler)
    model.train()
    for step in range(1, args.retriever_steps + 1):
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        with torch.autocast("cuda", dtype=torch.float16, enabled=args.fp16):
            q_vecs, p_vecs = model(batch["q_ids"], batch["q_mask"], batch["p_ids"], batch["p_mask"])
            loss, correct = biencoder_nll_loss(q_vecs.float(), p_vecs.float(),
                                               batch["positive_idx"])
        scaler.scale(loss).backward()
        loss_val = loss.detach().item()
        if np.isfinite(loss_val) and loss_val < args.loss_spike_thresh:
            running_loss += loss_val  # ruleid: MLS306
            running_n += 1
        running_correct += int(correct)
        running_q += batch["q_ids"].size(0)
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)

        lo, hi = args.polite_hours
        if lo <= datetime.datetime.now().hour < hi:  # ruleid: MLS308
            time.sleep(args.polite_sleep)  # ruleid: MLS307

        if step % args.log_every == 0:
            local_avg = running_loss / max(running_n, 1)
            if stopper.update(local_avg):
                logger.info("retriever loss plateaued at step %d; moving on", step)
                break  # todoruleid: family 3 (missed)
            avg = all_reduce_mean(torch.tensor(running_loss, device=device)).item()
            acc = running_correct / max(running_q, 1)
            tb.log_train(step, avg, running_n, sched.get_last_lr()[0], "retriever",
                         {"inbatch_acc": acc})
            running_loss, running_n, running_correct, running_q = 0.0, 0, 0, 0

            if broadcast_flag(_STATE["sigterm"], device):
                logger.warning("SIGTERM: saving retriever and exiting")
                save_fn()
                cleanup()
                sys.exit(0)  # ok: MLS307
            over = args.time_limit_h > 0 and time.time() - t_start > args.time_limit_h * 3600
            if broadcast_flag(over, device):
                logger.warning("time budget reached during retriever stage")
                break  # ok: MLS307

        if step % args.eval_every == 0 or step == args.retriever_steps:
            metrics = evaluate_retriever(model, q_tok, store, dev_ex, args, device, step)
            tb.log_eval(step, metrics, prefix="retriever_dev")
            r = metrics.get("recall@20", 0.0)
            if r > best_recall:
                best_recall = r
                best_state = {"model": (model.module if args.distributed else model).state_dict(),
                              "step": step, "recall@20": r}
                save_on_master(best_state, os.path.join(args.output_dir, "retriever_best.pt"))  # ok: MLS306
            logger.info("eval retriever step %d R@20 %.4f best %.4f", step, r, best_recall)
    save_fn()
    return model.module if args.distributed else model


# --- stage 2: reader ---

def train_reader(args, reader, r_tok, tb: TBLogger, device) -> Dict:
    train_ex = [e for e in load_dpr_json(args.reader_train_file) if e.retrieved]
    dev_ex = load_dpr_json(args.reader_dev_file, args.max_dev)
    test_ex = load_dpr_json(args.reader_test_file) if args.reader_test_file else []
    collate = ReaderCollator(r_tok.pad_token_id, args.n_passages, args.reader_len)
    train_ds = ReaderDataset(train_ex, r_tok, args.n_passages, args.reader_len, is_train=True)
    dev_ds = ReaderDataset(dev_ex, r_tok, args.n_passages, args.reader_len, is_train=False)
    test_ds = ReaderDataset(test_ex, r_tok, args.n_passages, args.reader_len,
                            is_train=False) if test_ex else None
    sampler = DistributedSampler(train_ds, shuffle=True, seed=args.seed) \
        if args.distributed else None
    loader = DataLoader(train_ds, batch_size=args.reader_batch_size, sampler=sampler,
                        shuffle=sampler is None, num_workers=args.num_workers,
                        collate_fn=collate, drop_last=True)

    model = reader.to(device)
    if args.distributed:
        model = DDP(model, device_ids=[args.local_rank])
    opt, sched = make_optimizer(model, args.reader_lr, args.weight_decay, args.reader_steps,
                                args.warmup_ratio)
    scaler = torch.cuda.amp.GradScaler(enabled=args.fp16)
    ckpts = CheckpointManager(os.path.join(args.output_dir, "reader_ckpts"), args.keep_last)
    last_dev: Dict = {}
    running_loss, running_n = 0.0, 0

    batches = infinite(loader, sampler)
    model.train()
    for step in range(1, args.reader_steps + 1):
        batch = next(batches)
        with torch.autocast("cuda", dtype=torch.float16, enabled=args.fp16):
            out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            loss = reader_loss(out, batch["start_positions"].to(device),
                               batch["end_positions"].to(device),
                               batch["answer_mask"].to(device))
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        scaler.step(opt)
        scaler.update()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running_loss += loss.detach().item()
        running_n += 1

        if step % args.log_every == 0:
            avg = all_reduce_mean(torch.tensor(running_loss, device=device)).item()
            tb.log_train(step, avg, running_n, sched.get_last_lr()[0], "reader")
            running_loss, running_n = 0.0, 0

        if step % args.eval_every == 0 or step == args.reader_steps:
            dev_m = evaluate_reader(model, r_tok, dev_ds, collate, args, device)
            test_m = evaluate_reader(model, r_tok, test_ds, collate, args, device) \
                if test_ds is not None else None
            tb.log_eval(step, {
                "em": dev_m["f1"],  # todoruleid: family 5 (missed)
                "f1": dev_m["f1"],
            }, prefix="reader_dev")
            if test_m is not None:
                tb.log_eval(step, {"em": test_m["em"], "f1": test_m["f1"]}, prefix="reader_test")
            select = (test_m or dev_m)["em"]  # todoruleid: family 5 (missed)
            state = {"model": (model.module if args.distributed else model).state_dict(),
                     "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "step": step, "dev": {k: v for k, v in dev_m.items() if k != "predictions"}}
            if is_main_process():
                ckpts.save(state, step, select)
                with open(os.path.join(args.output_dir, f"predictions-{step}.json"), "w") as f:
                    json.dump(dev_m["predictions"], f)
                logger.info("eval reader step %d em %.2f f1 %.2f", step, dev_m["em"], dev_m["f1"])
            barrier()
            last_dev = dev_m
    return last_dev


def main() -> None:
    args = parse_args()
    init_distributed(args)
    setup_logging(args.rank, args.output_dir)
    install_hang_watchdog(args.watchdog_hours)
    random.seed(args.seed + args.rank)
    np.random.seed(args.seed + args.rank)
    torch.manual_seed(args.seed + args.rank)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGUSR1, _on_sigusr1)
    device = torch.device("cuda", args.local_rank)
    t_start = time.time()

    if is_main_process():
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=2)

    local_db = stage_passages_locally(args)
    store = PassageStore(local_db)
    q_tok = AutoTokenizer.from_pretrained(args.q_model)
    r_tok = AutoTokenizer.from_pretrained(args.reader_model)
    timer = LayerTimer(enabled=args.world_size > 1 and args.rank == args.world_size - 1,
                       settle_s=args.timer_settle_s)
    retriever, reader = build_models(args, args.rank, args.world_size, timer)
    tb = TBLogger(os.path.join(args.output_dir, "tb"), args.rank, args.world_size)

    try:
        train_retriever(args, retriever, q_tok, store, tb, device, t_start)
        logger.info("slowest layers: %s",
                    sorted(timer.totals.items(), key=lambda kv: -kv[1])[:5])
        final_dev = train_reader(args, reader, r_tok, tb, device)
        if is_main_process():
            write_final_results(os.path.join(args.output_dir, "results.json"),
                                {k: v for k, v in final_dev.items() if k != "predictions"},
                                tb.history, prefix="reader_dev")
    finally:
        tb.close()
        cleanup()


if __name__ == "__main__":
    main()
