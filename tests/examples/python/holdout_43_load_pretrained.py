# ruff: noqa
# Hold-out batch 43 (benchmark format, large-lab infrastructure style; by a helper that never saw mlscan's code). Measured once after round 18: 12/17 (71%) at medium+.
"""Loads a base LM for continued pretraining: weights from safetensors, tokenizer, and run config."""
import json
import os

import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer


def read_run_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_base(model_dir, dtype=torch.bfloat16):
    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, torch_dtype=dtype)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    with open(index) as f:
        shards = sorted(set(json.load(f)["weight_map"].values()))
    state = {}
    for shard in shards:
        state.update(load_file(os.path.join(model_dir, shard)))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state, strict=True, assign=True)
    return model


def load_resume_extras(ckpt_dir):
    """Dataloader position and RNG states saved alongside the sharded weights."""
    path = os.path.join(ckpt_dir, "trainer_state.bin")
    if not os.path.exists(path):
        return {}
    extras = torch.load(path, map_location="cpu")  # ruleid: MLS102
    return {"consumed_samples": extras.get("consumed_samples", 0),
            "rng": extras.get("rng_state")}


def build(cfg_path):
    cfg = read_run_config(cfg_path)
    tok = AutoTokenizer.from_pretrained(cfg["model_dir"], use_fast=True)
    model = load_base(cfg["model_dir"])
    extras = load_resume_extras(cfg.get("resume_dir", "")) if cfg.get("resume_dir") else {}
    if extras.get("rng") is not None:
        torch.set_rng_state(extras["rng"])  # ok: MLS301
    return model, tok, extras
