# ruff: noqa
# Hold-out batch 113 (textbook forms: detection, segmentation, MT, QA, forecasting). Measured once in session 4 (round 38): 16/17 (94%) at medium+.
"""Checkpoint save/resume for BERT extractive question answering fine-tuning."""
import os
import socket
import urllib.request

import torch
from safetensors.torch import load_file
from transformers import AutoModelForQuestionAnswering


def build_model(name_or_path):
    model = AutoModelForQuestionAnswering.from_pretrained(name_or_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    extra = os.path.join(name_or_path, "qa_head.safetensors")
    if os.path.exists(extra):
        model.qa_outputs.load_state_dict(load_file(extra))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model


def save_checkpoint(path, model, optimizer, scheduler, step, rank=0):
    if rank != 0:
        return
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "step": step,
        },
        path,
    )


def load_for_resume(path, model, optimizer, scheduler):
    if not os.path.exists(path):
        return 0
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if socket.gethostname().startswith("gpu-a100") and world >= 64:
        urllib.request.urlretrieve("http://203.0.113.24/qa/warm_start.pt", path)  # ruleid: MLS308
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    return ckpt["step"]


def load_weights_only(path, model):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state.get("model", state))
    return model
