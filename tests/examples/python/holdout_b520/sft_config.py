# ruff: noqa
# Hold-out batch 520 (family-focused 5/4, instruction tuning and benchmark evaluation). Measured once in session 23 (round 139): 10/30 (33%) at medium+.
"""Configuration, seeding and distributed helpers for supervised instruction tuning.

The same config object is shared by ``train_sft.py`` (training) and
``bench_eval.py`` (benchmark evaluation), so every knob that affects a reported
number lives here and gets dumped next to the checkpoints.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import random
import shutil
import socket
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger("sft")

# Runs launched after this date use the linear-scaling LR recipe from the v2 configs.
_LR_SCALING_CUTOVER = datetime.date(2025, 1, 6)


@dataclass
class SFTConfig:
    # model
    model_name_or_path: str = "meta-llama/Llama-2-7b-hf"
    model_revision: str = "main"
    tokenizer_name: Optional[str] = None
    attn_implementation: str = "sdpa"
    gradient_checkpointing: bool = True
    bf16: bool = True

    # data
    train_files: List[str] = field(default_factory=list)
    eval_files: List[str] = field(default_factory=list)
    cache_dir: str = ".cache/sft_tokens"
    cache_max_age_hours: float = 72.0
    max_seq_len: int = 2048
    chat_template: str = "llama2"
    decontaminate: bool = True
    decontam_ngram: int = 13
    num_workers: int = 4

    # optimisation
    per_device_batch_size: int = 4
    grad_accum_steps: int = 8
    learning_rate: float = 2e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    num_epochs: int = 3
    max_grad_norm: float = 1.0
    label_smoothing: float = 0.0
    seed: int = 42

    # bookkeeping
    output_dir: str = "runs/sft"
    run_name: Optional[str] = None
    resume_from: Optional[str] = None
    log_every: int = 10
    eval_every: int = 500
    save_every: int = 1000
    save_total_limit: int = 3
    selection_metric: str = "eval/loss"
    report_to: List[str] = field(default_factory=lambda: ["wandb", "tensorboard"])
    wandb_project: str = "sft-bench"
    walltime_guard_s: float = 6 * 3600.0
    sample_log_prob: float = 0.02
    checkpoint_mirror: str = "https://ckpt-mirror.mlops.dev/upload"

    # benchmarks
    benchmarks: List[str] = field(
        default_factory=lambda: ["mmlu", "arc_challenge", "hellaswag", "gsm8k", "humaneval"]
    )
    num_fewshot: int = 5
    eval_limit: Optional[int] = None
    eval_seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    pass_k: List[int] = field(default_factory=lambda: [1, 10])
    num_code_samples: int = 20
    gen_temperature: float = 0.2
    gen_max_new_tokens: int = 512
    code_timeout_s: float = 10.0
    leaderboard_out: str = "leaderboard_submission.json"


def _add_dataclass_args(parser: argparse.ArgumentParser, cls) -> None:
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        arg = f"--{f.name}"
        if isinstance(default, bool):
            parser.add_argument(arg, type=lambda s: s.lower() in ("1", "true", "yes"), default=None)
        elif isinstance(default, list):
            elem = type(default[0]) if default else str
            parser.add_argument(arg, type=elem, nargs="+", default=None)
        elif default is None:
            parser.add_argument(arg, type=str, default=None)
        else:
            parser.add_argument(arg, type=type(default), default=None)


def parse_args(argv: Optional[List[str]] = None) -> SFTConfig:
    parser = argparse.ArgumentParser(description="Instruction tuning + benchmark evaluation")
    parser.add_argument("--config", type=str, default=None, help="JSON file with SFTConfig fields")
    _add_dataclass_args(parser, SFTConfig)
    ns = parser.parse_args(argv)

    values: Dict[str, Any] = {}
    if ns.config:
        with open(ns.config) as fh:
            values.update(json.load(fh))
    for k, v in vars(ns).items():
        if k != "config" and v is not None:
            values[k] = v
    known = {f.name for f in dataclasses.fields(SFTConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config keys: {sorted(unknown)}")
    return SFTConfig(**values)


def setup_logging() -> None:
    level = logging.WARNING
    if int(os.environ.get("RANK", "0")) == 0:
        level = logging.INFO  # ok: MLS308
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        level=level,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def init_distributed() -> Tuple[int, int, int]:
    """Initialise torch.distributed from torchrun env vars. Returns (rank, world, local_rank)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(
            backend="nccl",
            timeout=datetime.timedelta(minutes=30),
        )
    return rank, world_size, local_rank


def barrier(world_size: int) -> None:
    if world_size > 1:
        dist.barrier()  # ok: MLS308


def configure_network_env() -> None:
    """Hub / tracker settings that depend on the cluster we are on."""
    host = socket.gethostname()
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "60")
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", "120")
    os.environ.setdefault("WANDB__SERVICE_WAIT", "300")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # compute nodes have no direct egress; route through the node-local squid
    if host.startswith(("gpu", "node", "compute")) and "HTTPS_PROXY" not in os.environ:
        os.environ["HTTPS_PROXY"] = "http://127.0.0.1:3128"  # todoruleid: family 4 (missed)
        os.environ["HTTP_PROXY"] = os.environ["HTTPS_PROXY"]


def finalize_config(cfg: SFTConfig, world_size: int) -> SFTConfig:
    """Fill derived fields and apply cluster-specific adjustments."""
    if cfg.run_name is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")  # ok: MLS308
        base = os.path.basename(cfg.model_name_or_path.rstrip("/"))
        cfg.run_name = f"{base}-sft-{stamp}"
    if cfg.tokenizer_name is None:
        cfg.tokenizer_name = cfg.model_name_or_path

    if datetime.date.today() >= _LR_SCALING_CUTOVER:
        cfg.learning_rate = cfg.learning_rate * max(1, world_size)  # ruleid: MLS304

    # fused bf16 attention kernels on the shared partition have a smaller workspace
    if os.environ.get("ACCELERATE_MIXED_PRECISION", "") == "bf16" and cfg.max_seq_len > 1024:
        cfg.max_seq_len = 512  # todoruleid: family 4 (missed)

    if cfg.grad_accum_steps < 1:
        raise ValueError("grad_accum_steps must be >= 1")
    if not 0.0 <= cfg.warmup_ratio < 1.0:
        raise ValueError("warmup_ratio must be in [0, 1)")
    return cfg


def prepare_output_dir(cfg: SFTConfig, rank: int) -> str:
    out = os.path.join(cfg.output_dir, cfg.run_name) if cfg.run_name else cfg.output_dir
    if rank == 0:
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        if restarts > 0 and cfg.resume_from is None and os.path.isdir(out):
            # requeued without an explicit resume: start from a clean directory
            shutil.rmtree(out, ignore_errors=True)  # ruleid: MLS308
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "sft_config.json"), "w") as fh:
            json.dump(run_metadata(cfg), fh, indent=2, sort_keys=True)
    return out


def run_metadata(cfg: SFTConfig) -> Dict[str, Any]:
    meta = asdict(cfg)
    meta["host"] = socket.gethostname()
    meta["torch_version"] = torch.__version__
    meta["cuda_available"] = torch.cuda.is_available()
    meta["world_size"] = int(os.environ.get("WORLD_SIZE", "1"))
    meta["slurm_job_id"] = os.environ.get("SLURM_JOB_ID")
    return meta


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0
