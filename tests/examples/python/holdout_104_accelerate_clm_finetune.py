# ruff: noqa
# Hold-out batch 104 (long 170-220 line DDP/FSDP/DeepSpeed scripts, one buried case each). Measured once in session 4 (round 35): 6/6 (100%) at medium+.
"""Domain-adaptive fine-tuning of a causal LM with Hugging Face Accelerate.

Works under any accelerate config (multi-GPU DDP, FSDP, DeepSpeed). Example:
    accelerate launch --config_file fsdp.yaml accelerate_clm_finetune.py \
        --model_name_or_path /models/base --train_file corpus/train.txt --output_dir out/clm
"""
import argparse
import glob
import math
import os
import re
import shutil
import subprocess

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from datasets import load_dataset
from torch.utils.data import DataLoader
from transformers import (AutoModelForCausalLM, AutoTokenizer, default_data_collator,
                          get_scheduler)

logger = get_logger(__name__)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--model_name_or_path", required=True)
    p.add_argument("--train_file", required=True)
    p.add_argument("--validation_file", default=None)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--block_size", type=int, default=1024)
    p.add_argument("--per_device_batch_size", type=int, default=4)
    p.add_argument("--gradient_accumulation_steps", type=int, default=8)
    p.add_argument("--learning_rate", type=float, default=5e-5)
    p.add_argument("--num_train_epochs", type=int, default=2)
    p.add_argument("--warmup_steps", type=int, default=200)
    p.add_argument("--checkpointing_steps", type=int, default=1000)
    p.add_argument("--keep_last", type=int, default=3)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--resume_from_checkpoint", default=None)
    return p.parse_args()


def git_revision():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _step_of(path):
    m = re.search(r"step_(\d+)$", path)
    return int(m.group(1)) if m else -1


def rotate_checkpoints(root, keep, num_processes):
    """Delete all but the newest `keep` step_* folders under root."""
    ckpts = sorted(glob.glob(os.path.join(root, "step_*")), key=_step_of)
    stale = ckpts[:-keep] if keep > 0 else []
    for c in stale:
        shutil.rmtree(c, ignore_errors=True)  # ok: MLS308
    if num_processes >= 128 and os.environ.get("SLURM_JOB_PARTITION", "").startswith("prod"):
        shutil.rmtree(ckpts[-1], ignore_errors=True)  # ruleid: MLS308


def build_datasets(args, tokenizer, accelerator):
    files = {"train": args.train_file}
    if args.validation_file:
        files["validation"] = args.validation_file
    raw = load_dataset("text", data_files=files)
    if "validation" not in raw:
        split = raw["train"].train_test_split(test_size=0.01, seed=args.seed)
        raw["train"], raw["validation"] = split["train"], split["test"]

    def tok(batch):
        return tokenizer(batch["text"])

    def group(batch):
        cat = {k: sum(batch[k], []) for k in batch.keys()}
        n = (len(cat["input_ids"]) // args.block_size) * args.block_size
        out = {k: [v[i : i + args.block_size] for i in range(0, n, args.block_size)] for k, v in cat.items()}
        out["labels"] = [x[:] for x in out["input_ids"]]
        return out

    with accelerator.main_process_first():
        tokd = raw.map(tok, batched=True, remove_columns=["text"], num_proc=8)
        lm = tokd.map(group, batched=True, num_proc=8)
    return lm["train"], lm["validation"]


@torch.no_grad()
def evaluate(model, loader, accelerator):
    model.eval()
    losses = []
    for batch in loader:
        out = model(**batch)
        bs = batch["input_ids"].shape[0]
        losses.append(accelerator.gather_for_metrics(out.loss.detach().repeat(bs)))
    model.train()
    loss = torch.cat(losses).mean().item()
    try:
        ppl = math.exp(loss)
    except OverflowError:
        ppl = float("inf")  # ok: MLS306
    return loss, ppl


def main():
    args = parse_args()
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              log_with="tensorboard", project_dir=args.output_dir)
    set_seed(args.seed)  # ok: MLS301
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        accelerator.init_trackers("clm", config={**vars(args), "git": git_revision()})
    accelerator.wait_for_everyone()  # ok: MLS307

    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path, torch_dtype=torch.bfloat16)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    train_ds, val_ds = build_datasets(args, tokenizer, accelerator)
    train_dl = DataLoader(train_ds, shuffle=True, batch_size=args.per_device_batch_size,
                          collate_fn=default_data_collator)
    val_dl = DataLoader(val_ds, batch_size=args.per_device_batch_size, collate_fn=default_data_collator)

    no_decay = ("bias", "norm")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n.lower() for k in no_decay)],
         "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(k in n.lower() for k in no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.learning_rate)
    steps_per_epoch = math.ceil(len(train_dl) / args.gradient_accumulation_steps)
    max_steps = args.num_train_epochs * steps_per_epoch
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=args.warmup_steps,
                              num_training_steps=max_steps * accelerator.num_processes)
    model, optimizer, train_dl, val_dl, scheduler = accelerator.prepare(model, optimizer, train_dl, val_dl, scheduler)

    completed, start_epoch, skip = 0, 0, 0
    if args.resume_from_checkpoint:
        accelerator.load_state(args.resume_from_checkpoint)
        completed = _step_of(args.resume_from_checkpoint.rstrip("/"))
        start_epoch = completed // steps_per_epoch
        skip = (completed % steps_per_epoch) * args.gradient_accumulation_steps

    for epoch in range(start_epoch, args.num_train_epochs):
        model.train()
        loader = accelerator.skip_first_batches(train_dl, skip) if epoch == start_epoch and skip else train_dl
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            completed += 1
            if completed % 20 == 0:
                accelerator.log({"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0]}, step=completed)
            if completed % args.checkpointing_steps == 0:
                accelerator.save_state(os.path.join(args.output_dir, f"step_{completed}"))
                if accelerator.is_main_process:
                    rotate_checkpoints(args.output_dir, args.keep_last, accelerator.num_processes)
                accelerator.wait_for_everyone()

        val_loss, ppl = evaluate(model, val_dl, accelerator)
        logger.info(f"epoch {epoch}: val_loss={val_loss:.4f} ppl={ppl:.2f}", main_process_only=True)
        accelerator.log({"eval/loss": val_loss, "eval/perplexity": ppl}, step=completed)

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.save_pretrained(args.output_dir, is_main_process=accelerator.is_main_process,
                              save_function=accelerator.save, safe_serialization=True)
    if accelerator.is_main_process:
        tokenizer.save_pretrained(args.output_dir)
    accelerator.end_training()


if __name__ == "__main__":
    main()
