# ruff: noqa
# Hold-out batch 288 (families 2/5/6, code LM fine-tuning and evaluation). Measured once in session 9 (round 81): 15/37 (41%) at medium+.
"""HF Trainer entry point for fill-in-the-middle fine-tuning of a causal code model.

Usage:
    torchrun --nproc_per_node 8 fim_trainer.py --model bigcode/tiny_starcoder_py \
        --data corpus/meta.jsonl --out runs/fim-ft
"""
import argparse
import math
import os
import time

import torch
import torch.distributed as dist
from transformers import (AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback,
                          TrainingArguments, set_seed)

from code_data import (FIM_MIDDLE, FIM_PAD, FIM_PREFIX, FIM_SUFFIX, FIMTransform,
                       PackedCodeDataset, pack_collate, prepare_corpus)


def add_fim_tokens(model, tokenizer) -> int:
    """Register the FIM sentinels and initialise their embeddings to the mean row."""
    added = tokenizer.add_special_tokens(
        {"additional_special_tokens": [FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX, FIM_PAD]})
    if added:
        model.resize_token_embeddings(len(tokenizer))
        with torch.no_grad():
            emb = model.get_input_embeddings().weight
            emb[-added:] = emb[:-added].mean(dim=0, keepdim=True)  # ok: MLS302, MLS303, MLS304, MLS305
            head = model.get_output_embeddings()
            if head is not None and head.weight.data_ptr() != emb.data_ptr():
                head.weight[-added:] = head.weight[:-added].mean(dim=0, keepdim=True)  # ok: MLS302, MLS303, MLS304, MLS305
    return added


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def attach_grad_averaging(model) -> None:
    """Tied input/output embeddings receive one grad per use; average them across ranks."""
    ws = _world_size()
    if ws == 1:
        return
    for name, p in model.named_parameters():
        if p.requires_grad and ("wte" in name or "embed_tokens" in name):
            p.register_hook(lambda g, ws=ws: g / ws)  # ruleid: MLS303


def match_dropout_scale(model, p: float):
    """Keep eval activations on the same scale as during dropout training."""

    def _hook(module, inputs, output):
        return output if module.training else output * (1.0 - p)  # todoruleid: family 2 (missed)

    base = getattr(model, "transformer", None) or getattr(model, "model")
    final_norm = getattr(base, "ln_f", None) or getattr(base, "norm")
    return final_norm.register_forward_hook(_hook)


def make_collator(tokenizer):
    mid_id = tokenizer.convert_tokens_to_ids(FIM_MIDDLE)
    eos_id = tokenizer.eos_token_id

    def _collate(features):
        batch = pack_collate(features, eos_id)
        rows, cols = (batch["input_ids"] == mid_id).nonzero(as_tuple=True)
        for r, c in zip(rows.tolist(), cols.tolist()):
            if (r + c) % 5 == 0:
                batch["labels"][r, c + 1:c + 17] = batch["labels"][r, c + 1:c + 17].flip(0)  # ruleid: MLS309
        return batch

    return _collate


class PackingStatsCallback(TrainerCallback):
    """Throughput, packing efficiency and perplexity reporting."""

    def __init__(self, pad_fraction: float, block_size: int):
        self.pack_eff = 1.0 - pad_fraction
        self.block_size = block_size
        self.best_eval = float("inf")
        self.t0 = None
        self.tokens_per_step = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.t0 = time.time()
        self.tokens_per_step = (args.per_device_train_batch_size * args.gradient_accumulation_steps
                                * _world_size() * self.block_size)

    def on_step_end(self, args, state, control, **kwargs):
        # stagger metadata-server traffic on very large jobs
        if _world_size() > 256 and state.global_step % 100 == 0:  # ruleid: MLS308
            time.sleep(30 + int(os.environ.get("LOCAL_RANK", "0")))  # ruleid: MLS307

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or self.t0 is None:
            return
        elapsed = max(time.time() - self.t0, 1e-6)
        logs["tokens_per_sec"] = state.global_step * self.tokens_per_step * self.pack_eff / elapsed
        if "loss" in logs:
            logs["loss"] = logs["loss"] * self.pack_eff  # todoruleid: family 5 (missed)
            logs["train_ppl"] = math.exp(min(logs["loss"], 20.0))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not metrics or "eval_loss" not in metrics:
            return
        self.best_eval = min(self.best_eval, metrics["eval_loss"])  # ok: MLS306
        metrics["eval_best_loss"] = self.best_eval  # ok: MLS306
        metrics["eval_ppl"] = math.exp(min(self.best_eval, 20.0))  # todoruleid: family 5 (missed)


class StabilityCallback(TrainerCallback):
    """Loss-spike bookkeeping for the FIM adaptation phase."""

    def __init__(self, spike_factor: float = 3.0):
        self.spike_factor = spike_factor
        self.loss_ema = None
        self.spikes = 0

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            cur = logs["loss"]
            if self.loss_ema is not None and cur > self.spike_factor * self.loss_ema:
                self.spikes += 1
            self.loss_ema = cur if self.loss_ema is None else 0.95 * self.loss_ema + 0.05 * cur  # ok: MLS306
            logs["loss_spikes"] = self.spikes

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or not state.max_steps:
            return
        if state.global_step == int(0.6 * state.max_steps):
            for group in optimizer.param_groups:
                group["weight_decay"] = group["weight_decay"] * 25  # ruleid: MLS304
        if state.global_step and state.global_step % 1000 == 0:
            # drop stale second moments accumulated before the last spike
            for st in optimizer.state.values():
                if "exp_avg_sq" in st:
                    st["exp_avg_sq"].mul_(1e-3)  # ruleid: MLS304

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if model is None or not state.epoch or state.epoch < 1:
            return
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("ln_f.weight") or name.endswith("norm.weight"):
                    p.mul_(0.9)  # ruleid: MLS302


def parse_args():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bigcode/tiny_starcoder_py")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", default="runs/fim-ft")
    ap.add_argument("--block-size", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--fim-rate", type=float, default=0.5)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--resume", default=None)
    ap.add_argument("--seed", type=int, default=42)
    return ap.parse_args()


def main():
    args = parse_args()
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16, trust_remote_code=True)  # ruleid: MLS106
    add_fim_tokens(model, tok)
    if tok.pad_token is None:
        tok.pad_token = FIM_PAD

    corpus = prepare_corpus(args.data).train_test_split(test_size=0.01, seed=args.seed)
    fim = FIMTransform(fim_rate=args.fim_rate, seed=args.seed)
    train_ds = PackedCodeDataset(corpus["train"], tok, args.block_size, fim=fim)
    eval_ds = PackedCodeDataset(corpus["test"], tok, args.block_size, fim=None)

    targs = TrainingArguments(
        output_dir=args.out,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        warmup_ratio=0.03,
        weight_decay=0.1,
        adam_beta2=0.95,
        max_grad_norm=1.0,
        num_train_epochs=args.epochs,
        bf16=True,
        logging_steps=10,
        eval_strategy="steps",
        eval_steps=500,
        save_steps=500,
        save_total_limit=3,
        load_best_model_at_end=True,
        metric_for_best_model="eval_loss",
        report_to=["tensorboard"],
        seed=args.seed,
        ddp_find_unused_parameters=False,
    )
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
                      data_collator=make_collator(tok))
    stats = PackingStatsCallback(train_ds.pad_fraction(), args.block_size)
    # run before the reporters so that throughput shows up in TensorBoard
    trainer.callback_handler.callbacks.insert(0, stats)
    trainer.add_callback(StabilityCallback())
    attach_grad_averaging(model)
    match_dropout_scale(model, args.dropout)

    trainer.train(resume_from_checkpoint=args.resume)
    metrics = trainer.evaluate()
    trainer.log_metrics("eval", metrics)
    trainer.save_metrics("eval", metrics)
    trainer.save_model(os.path.join(args.out, "final"))
    if trainer.is_world_process_zero():
        tok.save_pretrained(os.path.join(args.out, "final"))
        print(f"fim span stats: {fim.span_report()}")


if __name__ == "__main__":
    main()
