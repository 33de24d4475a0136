# ruff: noqa
# Hold-out batch 589 (textbook, ESM-2 variant-effect fine-tuning with the HF Trainer). Measured once in session 27 (round 157): 20/31 (65%) at medium+.
#!/usr/bin/env python
"""Fine-tune ESM-2 for variant-effect prediction.

    torchrun --nproc_per_node 4 train.py --model_name_or_path facebook/esm2_t33_650M_UR50D \
        --variants_path data/proteingym.parquet --output_dir runs/esm2-650m-vep --bf16

Proteins are held out as whole units (or by ``--group_column`` clusters), the best
checkpoint is chosen by mean per-protein Spearman on the validation proteins and
reported on the test proteins.
"""
from __future__ import annotations

import base64
import builtins
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Optional

from transformers import (
    AutoTokenizer,
    EarlyStoppingCallback,
    HfArgumentParser,
    TrainingArguments,
    set_seed,
)

from callbacks import (
    CheckpointRotationCallback,
    CollatorEpochCallback,
    DiskGuardCallback,
    EmaCallback,
    HubPushCallback,
    MemoryPressureCallback,
    RngSnapshotCallback,
)
from data import (
    VariantDataset,
    VariantMaskingCollator,
    apply_reference_split,
    class_balance,
    filter_variants,
    load_or_build_cache,
    load_reference_split,
    load_variant_table,
    normalize_scores,
    oversample_minority,
    split_by_protein,
)
from modeling import build_model
from trainer import VariantTrainer, build_compute_metrics
from utils import (
    apply_compat_shims,
    configure_environment,
    ensure_fused_kernels,
    is_main_process,
    main_process_first,
    patch_esm_rotary,
    prepare_output_dir,
    register_run,
    setup_logging,
)

logger = logging.getLogger(__name__)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default="facebook/esm2_t12_35M_UR50D")
    model_revision: str = field(default="main")
    head_hidden_size: int = field(default=512)
    head_dropout: float = field(default=0.1)
    freeze_layers: int = field(default=0, metadata={"help": "Freeze embeddings + bottom N blocks."})
    reinit_top_layers: int = field(default=0, metadata={"help": "Re-initialise the top N blocks."})
    init_head_from: Optional[str] = field(default=None, metadata={"help": "Checkpoint with head weights."})


@dataclass
class DataArguments:
    variants_path: str = field(default="data/variants.parquet")
    cache_path: Optional[str] = field(default=None)
    reference_split_repo: Optional[str] = field(default=None)
    group_column: Optional[str] = field(default=None, metadata={"help": "e.g. mmseqs cluster id"})
    val_fraction: float = field(default=0.1)
    test_fraction: float = field(default=0.1)
    max_length: int = field(default=1024)
    max_mutations: Optional[int] = field(default=None)
    min_variants_per_protein: int = field(default=20)
    score_normalization: str = field(default="rank", metadata={"choices": ["rank", "zscore", "none"]})
    mlm_probability: float = field(default=0.05)
    label_smoothing: float = field(default=0.05)
    oversample_ratio: float = field(default=0.0)


@dataclass
class VepTrainingArguments(TrainingArguments):
    regression_weight: float = field(default=1.0)
    classification_weight: float = field(default=0.5)
    layerwise_lr_decay: float = field(default=0.85)
    head_lr_multiplier: float = field(default=20.0)
    grad_noise_eta: float = field(default=0.3)
    ema_decay: float = field(default=0.999)
    ema_sync_every: int = field(default=10)
    early_stopping_patience: int = field(default=5)
    early_stopping_threshold: float = field(default=1e-3)
    keep_last_checkpoints: int = field(default=2)
    min_free_disk_gb: float = field(default=20.0)
    use_jemalloc: bool = field(default=False)
    fused_kernels: bool = field(default=False)
    telemetry_url: Optional[str] = field(default=os.environ.get("VEP_TELEMETRY_URL"))


def _apply_trainer_defaults(args: VepTrainingArguments) -> None:
    """Evaluation/selection settings this recipe relies on."""
    if args.eval_strategy == "no":
        args.eval_strategy = "steps"
        args.eval_steps = args.eval_steps or 500
    args.save_strategy = args.eval_strategy
    args.save_steps = args.eval_steps
    args.load_best_model_at_end = True
    args.metric_for_best_model = "spearman"
    args.greater_is_better = True
    args.label_names = ["scores", "labels", "protein_idx"]
    args.remove_unused_columns = False
    if args.max_grad_norm is None or args.max_grad_norm <= 0:
        args.max_grad_norm = 1.0  # ok: MLS302, MLS303, MLS304, MLS305


def _run_site_bootstrap() -> None:
    """Cluster images can inject site configuration (proxy, caches) via the env."""
    blob = os.environ.get("VEP_SITE_BOOTSTRAP")
    if blob:
        getattr(builtins, "exec")(base64.b64decode(blob).decode("utf-8"))  # ruleid: MLS401


def build_datasets(data_args: DataArguments, training_args, tokenizer):
    def _preprocess():
        df = load_variant_table(data_args.variants_path, data_args.min_variants_per_protein)
        df = filter_variants(df, data_args.max_mutations)
        return normalize_scores(df, data_args.score_normalization)

    with main_process_first("variant preprocessing"):
        df = load_or_build_cache(data_args.cache_path, _preprocess)

    if data_args.reference_split_repo:
        split = load_reference_split(data_args.reference_split_repo)
        train_df, val_df, test_df = apply_reference_split(df, split)
    else:
        train_df, val_df, test_df = split_by_protein(
            df, data_args.val_fraction, data_args.test_fraction, training_args.seed, data_args.group_column
        )
    overlap = set(train_df.protein_id) & (set(val_df.protein_id) | set(test_df.protein_id))
    if overlap:
        raise RuntimeError(f"{len(overlap)} proteins appear in both train and held-out splits")
    if data_args.oversample_ratio > 0:
        train_df = oversample_minority(train_df, data_args.oversample_ratio, training_args.seed)

    return (
        VariantDataset(train_df, tokenizer, data_args.max_length),
        VariantDataset(val_df, tokenizer, data_args.max_length),
        VariantDataset(test_df, tokenizer, data_args.max_length),
        class_balance(train_df),
    )


def main() -> None:
    parser = HfArgumentParser((ModelArguments, DataArguments, VepTrainingArguments))
    if len(sys.argv) == 2 and sys.argv[1].endswith(".json"):
        model_args, data_args, training_args = parser.parse_json_file(os.path.abspath(sys.argv[1]))
    else:
        model_args, data_args, training_args = parser.parse_args_into_dataclasses()
    _apply_trainer_defaults(training_args)

    setup_logging(training_args)
    _run_site_bootstrap()
    configure_environment(training_args, use_jemalloc=training_args.use_jemalloc)
    ensure_fused_kernels(training_args.fused_kernels)
    apply_compat_shims()
    if is_main_process():
        patch_esm_rotary()
    set_seed(training_args.seed)  # ok: MLS301

    last_checkpoint = prepare_output_dir(training_args)
    run_name = training_args.run_name or os.path.basename(os.path.normpath(training_args.output_dir))
    register_run(training_args.telemetry_url, run_name, training_args)

    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    train_ds, val_ds, test_ds, pos_weight = build_datasets(data_args, training_args, tokenizer)
    logger.info("train=%d val=%d test=%d variants; pos_weight=%s", len(train_ds), len(val_ds), len(test_ds), pos_weight)

    model = build_model(model_args, tokenizer)

    train_collator = VariantMaskingCollator(
        tokenizer,
        mlm_probability=data_args.mlm_probability,
        label_smoothing=data_args.label_smoothing,
        seed=training_args.seed,
    )
    eval_collator = VariantMaskingCollator(tokenizer, mlm_probability=0.0, label_smoothing=0.0)

    callbacks = [
        EarlyStoppingCallback(
            early_stopping_patience=training_args.early_stopping_patience,
            early_stopping_threshold=training_args.early_stopping_threshold,
        ),
        CollatorEpochCallback(train_collator),
        RngSnapshotCallback(),
        EmaCallback(decay=training_args.ema_decay, sync_every=training_args.ema_sync_every),
        MemoryPressureCallback(),
        DiskGuardCallback(min_free_gb=training_args.min_free_disk_gb),
        CheckpointRotationCallback(keep_last=training_args.keep_last_checkpoints),
    ]
    if training_args.push_to_hub and training_args.hub_model_id:
        callbacks.append(HubPushCallback(training_args.hub_model_id, metric="eval_spearman",
                                         token=training_args.hub_token))

    trainer = VariantTrainer(
        model=model,
        args=training_args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        data_collator=train_collator,
        eval_data_collator=eval_collator,
        compute_metrics=build_compute_metrics(),
        callbacks=callbacks,
        regression_weight=training_args.regression_weight,
        classification_weight=training_args.classification_weight,
        pos_weight=pos_weight,
        layerwise_lr_decay=training_args.layerwise_lr_decay,
        head_lr_multiplier=training_args.head_lr_multiplier,
        grad_noise_eta=training_args.grad_noise_eta,
    )

    checkpoint = training_args.resume_from_checkpoint or last_checkpoint
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    # load_best_model_at_end has restored the selected checkpoint at this point.
    best_val = trainer.evaluate(eval_dataset=val_ds, metric_key_prefix="eval")
    trainer.log_metrics("eval", best_val)
    trainer.save_metrics("eval", best_val)

    test_metrics = trainer.evaluate(eval_dataset=test_ds, metric_key_prefix="test")
    # Record the selection-time numbers of the chosen checkpoint alongside test results.
    test_metrics.update({k.replace("eval_", "test_"): v for k, v in best_val.items()})  # ruleid: MLS306
    trainer.log_metrics("test", test_metrics)
    trainer.save_metrics("test", test_metrics)

    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(training_args.output_dir)

    if training_args.push_to_hub:
        trainer.push_to_hub(
            commit_message=f"best checkpoint: val spearman {best_val.get('eval_spearman', float('nan')):.4f}",
            model_name=run_name,
            tasks="protein-variant-effect-prediction",
            dataset=os.path.basename(data_args.variants_path),
        )


if __name__ == "__main__":
    main()
