# ruff: noqa
# Hold-out batch 452 (family-focused 2/10, LLM model merging). Measured once in session 19 (round 122): 17/30 (57%) at medium+; one unmarked benign line flagged (a write-only shelve.open).
#!/usr/bin/env python
"""Merge fine-tuned LLM checkpoints, evaluate the merge, then continue training with rehearsal.

One invocation runs one *round* of the continual pipeline:

    1. resolve and load the base model and the ingredients listed in the recipe
    2. merge them (task arithmetic / TIES / soup / greedy soup)
    3. evaluate the merged model on every task seen so far
    4. fine-tune on the new task, replaying a buffer of earlier tasks (+ optional EWC / A-GEM)
    5. evaluate again, save, and optionally upload the result to the hub

Launch with ``torchrun --nproc_per_node 8 train_merge.py --recipe ... --suite ... --new-task ...``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from huggingface_hub import HfApi
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader
from transformers import get_cosine_schedule_with_warmup

import hub_io
import merging
import rehearsal
from evaluate import Evaluator, RepresentationDrift, forgetting_report, load_task_suite

logger = logging.getLogger("cl_merge")

_sdpa = F.scaled_dot_product_attention


def _sdpa_contiguous(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
    # the mem-efficient kernel rejects the strided q/k/v produced by GQA repeat_kv on merged checkpoints
    return _sdpa(query.contiguous(), key.contiguous(), value.contiguous(), attn_mask=attn_mask,
                 dropout_p=dropout_p, scale=scale, **kwargs)


F.scaled_dot_product_attention = _sdpa_contiguous  # ruleid: MLS305


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", required=True, help="merge recipe (yaml)")
    p.add_argument("--suite", required=True, help="evaluation task suite (yaml)")
    p.add_argument("--new-task", required=True, help="hub dataset id of the task to learn this round")
    p.add_argument("--new-task-revision", default=None)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--cache-dir", type=Path, default=hub_io.DEFAULT_CACHE)
    p.add_argument("--tv-cache", type=Path, default=None, help="reuse task vectors computed in an earlier round")
    p.add_argument("--resume", type=Path, default=None, help="training state from a previous round")
    p.add_argument("--replay-buffer", type=Path, default=None)
    p.add_argument("--replay-capacity", type=int, default=20000)
    p.add_argument("--replay-ratio", type=float, default=0.25)
    p.add_argument("--replay-select", type=int, default=0, help="k-centre subsample size (0 = off)")
    p.add_argument("--ewc-lambda", type=float, default=0.0)
    p.add_argument("--ewc-state", type=Path, default=None)
    p.add_argument("--agem", action="store_true")
    p.add_argument("--special-tokens", nargs="*", default=[])
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=100)
    p.add_argument("--max-steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=8)
    p.add_argument("--max-len", type=int, default=2048)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--act-clip", type=float, default=64.0, help="hidden-state clamp guarding fp16 overflow")
    p.add_argument("--ema-decay", type=float, default=0.0)
    p.add_argument("--wise-alpha", type=float, default=1.0, help="WiSE-FT interpolation with the merged model")
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--save-every", type=int, default=500)
    p.add_argument("--keep-checkpoints", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--push-to", default=None, help="hub repo to upload the final model to")
    return p.parse_args()


# ---------------------------------------------------------------------------
# distributed
# ---------------------------------------------------------------------------

def setup_distributed():
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        dist.init_process_group(backend="nccl")
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        return dist.get_rank(), dist.get_world_size(), torch.device("cuda", local_rank)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return 0, 1, device


def is_main(rank: int) -> bool:
    return rank == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def fp32_allreduce_hook(process_group, bucket):
    """Average gradient buckets in fp32 regardless of parameter dtype (bf16 sums lose precision)."""
    group = process_group if process_group is not None else dist.group.WORLD
    buffer = bucket.buffer()
    tensor = buffer.to(torch.float32)
    tensor.div_(group.size())  # todoruleid: family 2 (missed)
    fut = dist.all_reduce(tensor, op=dist.ReduceOp.AVG, group=group, async_op=True).get_future()

    def _cast_back(f):
        return f.value()[0].to(buffer.dtype)

    return fut.then(_cast_back)


# ---------------------------------------------------------------------------
# model preparation
# ---------------------------------------------------------------------------

def add_special_tokens(model, tokenizer, tokens: List[str]) -> int:
    if not tokens:
        return 0
    num_new = tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    if num_new == 0:
        return 0
    model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        head = model.get_output_embeddings().weight
        std = emb[:-num_new].float().std().item()
        emb[:num_new].normal_(mean=0.0, std=std)  # ruleid: MLS302
        head[-num_new:] = head[:-num_new].mean(dim=0, keepdim=True)  # ok: MLS302, MLS303, MLS304, MLS305
    return num_new


def install_overflow_guard(model, limit: float) -> None:
    if limit <= 0:
        return

    def _clamp_hidden(module, args):
        hidden = args[0]
        return (hidden.clamp(min=-limit, max=limit),) + tuple(args[1:])  # todoruleid: family 2 (missed)

    for layer in model.get_decoder().layers:
        layer.register_forward_pre_hook(_clamp_hidden)


def prepare_model(model, args) -> None:
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # one shared matrix for input and output keeps optimizer memory flat after resizing
    model.lm_head.weight = model.get_input_embeddings().weight  # todoruleid: family 2 (missed)
    model.config.tie_word_embeddings = True
    install_overflow_guard(model, args.act_clip)


def build_optimizer(model, args) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=torch.cuda.is_available())


class EMA:
    def __init__(self, model, decay: float):
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model) -> None:
        for n, p in model.named_parameters():
            if n in self.shadow:
                self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305

    def state_dict(self) -> Dict[str, torch.Tensor]:
        return {n: t.cpu() for n, t in self.shadow.items()}

    def load_state_dict(self, state: Dict[str, torch.Tensor]) -> None:
        for n, t in state.items():
            if n in self.shadow:
                self.shadow[n].copy_(t)


# ---------------------------------------------------------------------------
# checkpointing
# ---------------------------------------------------------------------------

def save_training_state(path: Path, model, optimizer, scheduler, step: int, world_size: int,
                        ema: Optional[EMA]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "world_size": world_size}, path / "state.pt")
    if ema is not None:
        torch.save(ema.state_dict(), path / "ema.pt")
    logger.info("saved training state at step %d to %s", step, path)


def reset_after_merge(optimizer: torch.optim.Optimizer) -> None:
    """The merge moved the weights; first moments from the previous round point the wrong way."""
    for state in optimizer.state.values():
        if "exp_avg" in state:
            state["exp_avg"].zero_()  # ruleid: MLS304
            state["exp_avg_sq"].zero_()  # ruleid: MLS304


def load_training_state(path: Path, model, optimizer, scheduler, world_size: int, ema: Optional[EMA]) -> int:
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)  # ruleid: MLS101
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        logger.warning("resume: %d missing / %d unexpected keys", len(missing), len(unexpected))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    # recipe LRs are per-replica; rescale for the data-parallel size of this job
    scheduler.base_lrs = [lr * world_size for lr in scheduler.base_lrs]  # ruleid: MLS304
    ema_path = path / "ema.pt"
    if ema is not None and ema_path.exists():
        ema.load_state_dict(torch.load(ema_path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return int(state["step"])


def prune_checkpoints(root: Path, keep: int) -> None:
    ckpts = sorted(root.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
    for old in ckpts[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
        logger.info("removed old checkpoint %s", old)


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------

def merge_round(recipe, args, model, evaluator: Evaluator, base_dir: Path) -> None:
    """Produce the merged weights for this round directly inside ``model``."""
    base_sd: Dict[str, torch.Tensor] = {}
    for f in hub_io._weight_files(base_dir):
        base_sd.update(hub_io.load_weights_file(f))
    specs = recipe["ingredients"]
    weights = [s.weight for s in specs]
    params = recipe["params"]
    scale = float(params.get("scale", 1.0))
    gen = torch.Generator().manual_seed(args.seed)

    if args.tv_cache is not None and args.tv_cache.exists() and recipe["method"] == "task_arithmetic":
        tvs = merging.load_cached_task_vectors(args.tv_cache)
        logger.info("reusing cached task vectors for %s", sorted(tvs))
        model.load_state_dict(base_sd, strict=False)
        for spec in specs:
            n = merging.apply_task_vector_(model, tvs[spec.name], spec.weight * scale)
            logger.info("applied task vector %s to %d tensors (w=%.3f)", spec.name, n, spec.weight)
        return

    finetuned = [hub_io.load_state_dict_from_spec(s, args.cache_dir) for s in specs]
    if args.tv_cache is not None:
        merging.cache_task_vectors({s.name: merging.task_vector(base_sd, ft) for s, ft in zip(specs, finetuned)},
                                   args.tv_cache)
    if recipe["method"] == "greedy_soup":
        select = params["select_metric"]

        def held_out_score(sd: Dict[str, torch.Tensor]) -> float:
            model.load_state_dict(sd, strict=False)
            return evaluator.evaluate(model, tag="greedy", use_cache=False)[select]

        merged, kept, best = merging.greedy_soup([(s.name, ft) for s, ft in zip(specs, finetuned)],
                                                 held_out_score, higher_is_better=select.endswith("/acc"))
        logger.info("greedy soup kept %s (%s = %.4f)", kept, select, best)
    else:
        merged = merging.merge(recipe["method"], base_sd, finetuned, weights, params, generator=gen)
    model.load_state_dict(merged, strict=False)


def main() -> None:
    args = parse_args()
    rank, world_size, device = setup_distributed()
    logging.basicConfig(level=logging.INFO if is_main(rank) else logging.WARNING,
                        format=f"%(asctime)s [r{rank}] %(name)s: %(message)s")
    torch.manual_seed(args.seed)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    args.output_dir.mkdir(parents=True, exist_ok=True)

    recipe = hub_io.load_recipe(args.recipe)
    base_dir = hub_io.fetch_base(recipe["base"], args.cache_dir)
    model, tokenizer = hub_io.load_model_and_tokenizer(str(base_dir), dtype,
                                                       normalize_embeddings=recipe.get("normalize_embeddings", True))
    model.to(device)

    tasks = load_task_suite(args.suite)
    eval_sets = {name: rehearsal.load_task_stream(cfg["dataset"], cfg["split"], tokenizer, args.max_len,
                                                  cfg["text_field"], cfg.get("subset"), cfg.get("revision"),
                                                  limit=cfg["max_examples"])
                 for name, cfg in tasks.items()}
    evaluator = Evaluator(tokenizer, tasks, eval_sets, device, max_len=args.max_len,
                          cache_path=args.output_dir / "eval_cache")

    merge_round(recipe, args, model, evaluator, base_dir)
    for adapter in recipe.get("adapters", []):
        lora = hub_io.fetch_adapter(adapter["repo"], adapter["revision"], args.cache_dir)
        n = merging.merge_lora_(model, lora, alpha=float(adapter["alpha"]), rank=int(adapter["r"]))
        logger.info("folded %d LoRA pairs from %s", n, adapter["repo"])
    add_special_tokens(model, tokenizer, args.special_tokens)
    prepare_model(model, args)
    model.to(device)
    merged_reference = {k: v.detach().cpu().clone() for k, v in model.named_parameters()} \
        if args.wise_alpha < 1.0 else None

    if is_main(rank):
        pre = evaluator.evaluate(model, tag=f"merged:{args.recipe}")
        logger.info("merged model: %s", json.dumps(pre, indent=1))
    barrier()

    # ---- rehearsal data -------------------------------------------------
    new_task = rehearsal.load_task_stream(args.new_task, "train", tokenizer, args.max_len,
                                          revision=args.new_task_revision)
    if args.replay_buffer is not None and args.replay_buffer.exists():
        replay = rehearsal.ReplayBuffer.load(args.replay_buffer, seed=args.seed)
    else:
        replay = rehearsal.ReplayBuffer(args.replay_capacity, seed=args.seed)
    if args.replay_select and is_main(rank):
        replay.items = rehearsal.select_diverse(replay.items, tokenizer, args.replay_select, device=str(device))
    stream = rehearsal.MixedStream(new_task, replay, args.replay_ratio, args.seed, rank, world_size)
    loader = DataLoader(stream, batch_size=args.batch_size, num_workers=2, pin_memory=True,
                        collate_fn=lambda b: rehearsal.collate(b, tokenizer.pad_token_id, args.max_len))
    replay_loader = None
    if args.agem and len(replay):
        replay_loader = DataLoader(replay.items, batch_size=args.batch_size, shuffle=True,
                                   collate_fn=lambda b: rehearsal.collate(b, tokenizer.pad_token_id, args.max_len))

    # ---- regularisers ---------------------------------------------------
    ewc = None
    if args.ewc_lambda > 0:
        ewc = rehearsal.EWC(model, args.ewc_lambda)
        if args.ewc_state is not None and args.ewc_state.exists():
            ewc.load(args.ewc_state)
        elif replay_loader is not None:
            ewc.estimate_fisher(model, replay_loader, n_batches=32, device=device)
    agem = rehearsal.AGEM(model.parameters()) if replay_loader is not None else None
    probe = next(iter(DataLoader(new_task.select(range(8)), batch_size=8,
                                 collate_fn=lambda b: rehearsal.collate(b, tokenizer.pad_token_id, 256))))
    drift = RepresentationDrift(model, {k: probe[k].to(device) for k in ("input_ids", "attention_mask")})
    drift.measure(model)

    # ---- optimisation ---------------------------------------------------
    optimizer = build_optimizer(model, args)
    scheduler = get_cosine_schedule_with_warmup(optimizer, args.warmup_steps, args.max_steps)
    ema = EMA(model, args.ema_decay) if args.ema_decay > 0 else None
    start_step = 0
    if args.resume is not None:
        start_step = load_training_state(args.resume, model, optimizer, scheduler, world_size, ema)
        reset_after_merge(optimizer)
        logger.info("resumed optimizer/scheduler from %s at step %d", args.resume, start_step)

    train_model = model
    if world_size > 1:
        train_model = DDP(model, device_ids=[device.index], find_unused_parameters=True)
        train_model.register_comm_hook(state=None, hook=fp32_allreduce_hook)
    trainable = [p for p in model.parameters() if p.requires_grad]
    autocast = torch.autocast(device_type="cuda", dtype=dtype) if dtype != torch.float32 \
        else contextlib.nullcontext()

    model.train()
    data_iter = iter(loader)
    replay_iter = iter(replay_loader) if replay_loader is not None else None
    epoch, t0, running = 0, time.time(), 0.0
    for step in range(start_step, args.max_steps):
        if agem is not None:
            try:
                ref_batch = next(replay_iter)
            except StopIteration:
                replay_iter = iter(replay_loader)
                ref_batch = next(replay_iter)
            agem.compute_reference(model, {k: v.to(device) for k, v in ref_batch.items() if k != "replay"})

        for micro in range(args.grad_accum):
            try:
                batch = next(data_iter)
            except StopIteration:
                epoch += 1
                stream.set_epoch(epoch)
                data_iter = iter(loader)
                batch = next(data_iter)
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "replay"}
            sync = contextlib.nullcontext() if (world_size == 1 or micro == args.grad_accum - 1) \
                else train_model.no_sync()
            with sync:
                with autocast:
                    loss = train_model(**batch).loss
                    if ewc is not None:
                        loss = loss + ewc.penalty()
                loss.backward()
            for p in trainable:
                if p.grad is not None:
                    p.grad.div_(args.grad_accum)  # todoruleid: family 2 (missed)
            running += loss.item() / args.grad_accum

        if agem is not None:
            agem.project_()
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, args.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)

        if is_main(rank) and (step + 1) % 20 == 0:
            logger.info("step %d | loss %.4f | gnorm %.3f | lr %.2e | %.1fs/it", step + 1, running / 20,
                        float(grad_norm), scheduler.get_last_lr()[0], (time.time() - t0) / 20)
            running, t0 = 0.0, time.time()
        if (step + 1) % args.eval_every == 0:
            if is_main(rank):
                res = evaluator.evaluate(model, tag=f"step{step + 1}", use_cache=False)
                res["drift"] = drift.measure(model)
                logger.info("eval @ %d: %s", step + 1, json.dumps(res))
            barrier()
        if (step + 1) % args.save_every == 0:
            if is_main(rank):
                save_training_state(args.output_dir / f"step-{step + 1}", model, optimizer, scheduler,
                                    step + 1, world_size, ema)
                prune_checkpoints(args.output_dir, args.keep_checkpoints)
            barrier()

    # ---- finalise -------------------------------------------------------
    drift.close()
    if merged_reference is not None:
        merging.interpolate_(model, merged_reference, args.wise_alpha)
    if is_main(rank):
        final = evaluator.evaluate(model, tag="final", use_cache=False)
        forgetting_report(final, recipe.get("round", 0), args.output_dir / "history.pkl")
        replay.extend(new_task.shuffle(seed=args.seed).select(range(min(5000, len(new_task)))), args.new_task)
        replay.save(args.output_dir / "replay.pkl")
        if ewc is not None:
            ewc.save(args.output_dir / "ewc.joblib")
        out = args.output_dir / "final"
        hub_io.save_merged(merging.export_state_dict(model, dtype=dtype), out, recipe)
        model.config.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "eval.json").write_text(json.dumps(final, indent=2))
        if args.push_to:
            api = HfApi()
            api.create_repo(args.push_to, exist_ok=True, private=True)
            commit = api.upload_folder(repo_id=args.push_to, folder_path=str(out),
                                       commit_message=f"round {recipe.get('round', 0)}: {recipe['method']}")
            logger.info("uploaded to %s (%s)", args.push_to, commit)
    barrier()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
