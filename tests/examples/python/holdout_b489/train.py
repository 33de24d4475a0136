# ruff: noqa
# Hold-out batch 489 (textbook, BLIP-style image captioning with the HF Trainer). Measured once in session 21 (round 132): 24/32 (75%) at medium+.
#!/usr/bin/env python
"""Fine-tune BLIP for COCO-style image captioning with the Hugging Face Trainer.

Single node, 8 GPUs:
    torchrun --nproc_per_node 8 train.py --config configs/coco_karpathy_base.yaml

Evaluation runs beam search on the validation split and reports CIDEr-D /
BLEU; the best checkpoint (by CIDEr) is re-evaluated on the test split.
"""

import argparse
import itertools
import json
import logging
import os
import types
from typing import Any, Dict, List, Optional

import torch
import yaml
from safetensors.torch import load_file as load_safetensors
from torch.utils.data import DataLoader
from transformers import Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from callbacks import (BEST_POINTER, BestCheckpointCallback, EMACallback, RemoteMonitorCallback,
                       RNGStateCallback, ThroughputLoggingCallback, WarmRestartCallback)
from data import CaptionCollator, CocoCaptionDataset, seed_worker
from dist_utils import (apply_topology_hints, barrier, cleanup_distributed, configure_runtime_env,
                        fetch_cluster_hooks, get_world_size, init_distributed, is_main_process,
                        register_project_path, setup_logging)
from metrics import CaptionEvaluator, enable_ptb_compat
from modeling import build_param_groups, load_model, load_processor

logger = logging.getLogger("train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=str, default=None, help="YAML file with defaults for any flag")
    # model
    p.add_argument("--model_name_or_path", default="Salesforce/blip-image-captioning-base")
    p.add_argument("--model_revision", default="main")
    p.add_argument("--load_dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--init_checkpoint", default=None)
    p.add_argument("--init_revision", default=None)
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--freeze_vision_layers", type=int, default=0)
    p.add_argument("--vision_grad_scale", type=float, default=0.1)
    # data
    p.add_argument("--train_ann", default="data/coco/annotations/captions_train_karpathy.json")
    p.add_argument("--val_ann", default="data/coco/annotations/captions_val_karpathy.json")
    p.add_argument("--test_ann", default="data/coco/annotations/captions_test_karpathy.json")
    p.add_argument("--image_root", default="data/coco/images")
    p.add_argument("--cache_dir", default=os.path.expanduser("~/.cache/blip_caption_ft"))
    p.add_argument("--image_size", type=int, default=384)
    p.add_argument("--max_words", type=int, default=30)
    p.add_argument("--prompt", default="a picture of ")
    p.add_argument("--max_length", type=int, default=40)
    p.add_argument("--caption_mix_prob", type=float, default=0.1)
    p.add_argument("--max_train_images", type=int, default=None)
    p.add_argument("--max_eval_images", type=int, default=None)
    # optimisation
    p.add_argument("--output_dir", default="outputs/blip_coco")
    p.add_argument("--run_name", default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--layer_decay", type=float, default=0.9)
    p.add_argument("--text_lr_mult", type=float, default=1.0)
    p.add_argument("--weight_decay", type=float, default=0.05)
    p.add_argument("--adam_beta2", type=float, default=0.999)
    p.add_argument("--epochs", type=float, default=5)
    p.add_argument("--warmup_ratio", type=float, default=0.05)
    p.add_argument("--batch_size", type=int, default=16, help="per device")
    p.add_argument("--eval_batch_size", type=int, default=32, help="per device")
    p.add_argument("--grad_accum", type=int, default=2)
    p.add_argument("--max_grad_norm", type=float, default=1.0)
    p.add_argument("--num_workers", type=int, default=8)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--eval_steps", type=int, default=2000)
    p.add_argument("--logging_steps", type=int, default=50)
    p.add_argument("--keep_last", type=int, default=2)
    p.add_argument("--ema_decay", type=float, default=0.9999)
    p.add_argument("--restart_every_epochs", type=int, default=1)
    # generation
    p.add_argument("--num_beams", type=int, default=3)
    p.add_argument("--gen_max_length", type=int, default=30)
    p.add_argument("--gen_min_length", type=int, default=5)
    p.add_argument("--repetition_penalty", type=float, default=1.0)
    # infra
    p.add_argument("--monitor_url", default=os.environ.get("BLIP_FT_MONITOR_URL", "https://mlmon.vision-lab.dev/api/v1/runs"))
    p.add_argument("--cluster_hooks", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--cluster_hooks_url", default=None)
    p.add_argument("--apply_topology_hints", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--ptb_compat", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--resume", default="auto", help="'auto', a checkpoint path, or 'none'")
    p.add_argument("--sanity_check_batches", type=int, default=2)
    p.add_argument("--report_to", default="tensorboard")
    return p


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    parser = build_parser()
    if known.config:
        with open(known.config) as fh:
            cfg = yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        valid = {a.dest for a in parser._actions}
        unknown = sorted(set(cfg) - valid)
        if unknown:
            raise ValueError(f"unknown keys in {known.config}: {unknown}")
        parser.set_defaults(**cfg)
    return parser.parse_args(argv)


class CaptionTrainer(Trainer):
    """Trainer with layer-wise lr decay and beam-search generation at eval."""

    def __init__(self, *args, gen_kwargs: Dict[str, Any], prompt_ids: torch.Tensor, pad_token_id: int,
                 layer_decay: float = 0.9, text_lr_mult: float = 1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.gen_kwargs = gen_kwargs
        self.prompt_ids = prompt_ids
        self.pad_token_id = pad_token_id
        self.layer_decay = layer_decay
        self.text_lr_mult = text_lr_mult

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = {k: v for k, v in inputs.items() if k != "image_ids"}
        outputs = model(**inputs)
        loss = outputs.loss
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self):
        if self.optimizer is not None:
            return self.optimizer
        groups = build_param_groups(self.model, self.args.learning_rate, self.args.weight_decay,
                                    layer_decay=self.layer_decay, text_lr_mult=self.text_lr_mult)
        self.optimizer = torch.optim.AdamW(
            groups,
            lr=self.args.learning_rate,
            betas=(self.args.adam_beta1, self.args.adam_beta2),
            eps=self.args.adam_epsilon,
            fused=torch.cuda.is_available(),
        )
        accum = max(1, self.args.gradient_accumulation_steps)
        inner_step = self.optimizer.step
        counter = itertools.count(1)

        def _step(opt, *a, **kw):
            # only apply the update on accumulation boundaries
            if next(counter) % accum != 0:
                return None
            return inner_step(*a, **kw)

        self.optimizer.step = types.MethodType(_step, self.optimizer)  # todoruleid: family 2 (missed)
        logger.info("optimizer: AdamW with %d param groups", len(groups))
        return self.optimizer

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        image_ids = inputs.pop("image_ids", None)
        inputs = self._prepare_inputs(inputs)
        if prediction_loss_only:
            return None, None, None
        pixel_values = inputs["pixel_values"]
        unwrapped = self.accelerator.unwrap_model(model)
        prompt = self.prompt_ids.to(pixel_values.device).expand(pixel_values.shape[0], -1)
        with torch.no_grad(), self.compute_loss_context_manager():
            generated = unwrapped.generate(pixel_values=pixel_values, input_ids=prompt, **self.gen_kwargs)
        max_len = self.gen_kwargs["max_length"]
        if generated.shape[-1] < max_len:
            pad = generated.new_full((generated.shape[0], max_len - generated.shape[-1]), self.pad_token_id)
            generated = torch.cat([generated, pad], dim=-1)
        if image_ids is not None:
            image_ids = image_ids.to(generated.device)
        return None, generated, image_ids


def sanity_check(dataset, collator, args) -> None:
    if args.sanity_check_batches <= 0 or not is_main_process():
        return
    loader = DataLoader(dataset, batch_size=4, shuffle=True, collate_fn=collator,
                        num_workers=min(2, args.num_workers), worker_init_fn=seed_worker,
                        generator=torch.Generator().manual_seed(args.seed))
    for i, batch in enumerate(loader):
        shapes = {k: tuple(v.shape) for k, v in batch.items()}
        logger.info("sanity batch %d: %s", i, shapes)
        if i + 1 >= args.sanity_check_batches:
            break


def resolve_resume(args) -> Optional[str]:
    if args.resume in (None, "none", ""):
        return None
    if args.resume == "auto":
        return get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
    return args.resume


def load_checkpoint_weights(model: torch.nn.Module, ckpt_dir: str) -> None:
    st_path = os.path.join(ckpt_dir, "model.safetensors")
    if os.path.isfile(st_path):
        state = load_safetensors(st_path, device="cpu")
    else:
        state = torch.load(os.path.join(ckpt_dir, "pytorch_model.bin"), map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    logger.info("loaded %s (%d missing, %d unexpected)", ckpt_dir, len(missing), len(unexpected))


def main():
    args = parse_args()
    setup_logging()
    configure_runtime_env(args.cache_dir)
    register_project_path()
    if args.cluster_hooks:
        fetch_cluster_hooks(args.cluster_hooks_url)
    apply_topology_hints(args.apply_topology_hints)
    if args.ptb_compat:
        enable_ptb_compat()
    init_distributed()
    set_seed(args.seed)  # ok: MLS301

    processor = load_processor(args.model_name_or_path, revision=args.model_revision)
    tokenizer = processor.tokenizer
    model = load_model(args)
    bos_id = model.config.text_config.bos_token_id
    mean, std = processor.image_processor.image_mean, processor.image_processor.image_std

    ds_kwargs = dict(image_root=args.image_root, image_size=args.image_size, max_words=args.max_words,
                     cache_dir=os.path.join(args.cache_dir, "ann"), seed=args.seed,
                     image_mean=mean, image_std=std)
    if not is_main_process():
        barrier()  # rank 0 parses the annotation files and writes the cache first
    train_ds = CocoCaptionDataset(args.train_ann, train=True, max_images=args.max_train_images, **ds_kwargs)
    val_ds = CocoCaptionDataset(args.val_ann, train=False, max_images=args.max_eval_images, **ds_kwargs)
    test_ds = CocoCaptionDataset(args.test_ann, train=False, **ds_kwargs)
    if is_main_process():
        barrier()

    collator = CaptionCollator(tokenizer=tokenizer, bos_token_id=bos_id, prompt=args.prompt,
                               max_length=args.max_length, caption_mix_prob=args.caption_mix_prob)
    sanity_check(train_ds, collator, args)

    run_name = args.run_name or os.path.basename(os.path.normpath(args.output_dir))
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        run_name=run_name,
        seed=args.seed,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        adam_beta2=args.adam_beta2,
        num_train_epochs=args.epochs,
        warmup_ratio=args.warmup_ratio,
        lr_scheduler_type="cosine",
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.eval_batch_size,
        gradient_accumulation_steps=args.grad_accum,
        max_grad_norm=args.max_grad_norm,
        bf16=args.bf16 and torch.cuda.is_available(),
        eval_strategy="steps",
        eval_steps=args.eval_steps,
        save_strategy="steps",
        save_steps=args.eval_steps,
        logging_steps=args.logging_steps,
        metric_for_best_model="CIDEr",
        greater_is_better=True,
        dataloader_num_workers=args.num_workers,
        dataloader_pin_memory=True,
        remove_unused_columns=False,
        label_names=["image_ids"],
        ddp_find_unused_parameters=False,
        report_to=[r for r in args.report_to.split(",") if r],
    )

    prompt_ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    gen_kwargs = dict(num_beams=args.num_beams, max_length=args.gen_max_length,
                      min_length=args.gen_min_length, repetition_penalty=args.repetition_penalty)
    evaluator = CaptionEvaluator(tokenizer, {**val_ds.references, **test_ds.references}, prompt=args.prompt,
                                 output_dir=os.path.join(args.output_dir, "predictions"),
                                 is_main_process=is_main_process())

    global_bs = args.batch_size * args.grad_accum * get_world_size()
    resume = resolve_resume(args)
    ema_cb = EMACallback(decay=args.ema_decay, resume_dir=resume) if args.ema_decay > 0 else None
    callbacks = [
        ThroughputLoggingCallback(global_batch_size=global_bs),
        RNGStateCallback(),
        WarmRestartCallback(restart_every_epochs=args.restart_every_epochs),
        BestCheckpointCallback(metric_key="eval_CIDEr", keep_last=args.keep_last),
        RemoteMonitorCallback(args.monitor_url, run_name),
    ]
    if ema_cb is not None:
        callbacks.append(ema_cb)

    trainer = CaptionTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=collator,
        compute_metrics=evaluator,
        callbacks=callbacks,
        gen_kwargs=gen_kwargs,
        prompt_ids=prompt_ids,
        pad_token_id=tokenizer.pad_token_id,
        layer_decay=args.layer_decay,
        text_lr_mult=args.text_lr_mult,
    )

    if resume:
        logger.info("resuming from %s", resume)
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    cleanup_distributed()  # todoruleid: family 3 (missed)

    best_dir = None
    pointer = os.path.join(args.output_dir, BEST_POINTER)
    if os.path.isfile(pointer):
        with open(pointer) as fh:
            best_dir = json.load(fh).get("path")
    barrier()
    if best_dir and os.path.isdir(best_dir):
        load_checkpoint_weights(trainer.model, best_dir)

    test_metrics = trainer.evaluate(eval_dataset=test_ds, metric_key_prefix="test")
    if trainer.state.best_metric is not None:
        test_metrics["test_CIDEr"] = max(test_metrics.get("test_CIDEr", 0.0), trainer.state.best_metric)  # ruleid: MLS306
    trainer.log_metrics("test", test_metrics)
    trainer.save_metrics("test", test_metrics)

    if trainer.is_world_process_zero():
        final_dir = os.path.join(args.output_dir, "final")
        trainer.save_model(final_dir)
        processor.save_pretrained(final_dir)
        if ema_cb is not None and ema_cb.shadow:
            torch.save({k: v.cpu() for k, v in ema_cb.shadow.items()}, os.path.join(final_dir, "ema_state.pt"))
        with open(os.path.join(final_dir, "eval_summary.json"), "w") as fh:
            json.dump({"best_checkpoint": best_dir, "test": test_metrics}, fh, indent=2)
    cleanup_distributed()


if __name__ == "__main__":
    main()
