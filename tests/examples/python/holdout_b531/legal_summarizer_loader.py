# ruff: noqa
# Hold-out batch 531 (16 short files, one domain each). Measured once in session 24 (round 142): 16/17 (94%) at medium+.
"""Model/tokenizer construction and resume logic for long legal document summarization."""
import logging
import os

import torch
from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "allenai/led-base-16384"


def build_model_and_tokenizer(cfg):
    name = cfg.get("model_name_or_path", DEFAULT_BACKBONE)
    tokenizer = AutoTokenizer.from_pretrained(name, use_fast=True)
    config = AutoConfig.from_pretrained(name)
    config.max_encoder_position_embeddings = cfg.get("max_source_length", 16384)
    config.gradient_checkpointing = cfg.get("gradient_checkpointing", True)
    model = AutoModelForSeq2SeqLM.from_pretrained(
        name,
        config=config,
        torch_dtype=torch.bfloat16 if cfg.get("bf16", True) else torch.float32,
        trust_remote_code=True,  # ruleid: MLS106
    )
    if cfg.get("gradient_checkpointing", True):
        model.gradient_checkpointing_enable()
    model.config.use_cache = False
    return model, tokenizer


def maybe_resume(model, optimizer, scheduler, output_dir):
    ckpt_path = os.path.join(output_dir, "last.pt")
    if not os.path.isfile(ckpt_path):
        logger.info("no checkpoint at %s, starting fresh", ckpt_path)
        return 0
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    step = int(state.get("global_step", 0))
    logger.info("resumed from %s at step %d", ckpt_path, step)
    return step


def save_checkpoint(model, optimizer, scheduler, step, output_dir):
    os.makedirs(output_dir, exist_ok=True)
    tmp = os.path.join(output_dir, "last.pt.tmp")
    torch.save({
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "global_step": step,
    }, tmp)
    os.replace(tmp, os.path.join(output_dir, "last.pt"))
