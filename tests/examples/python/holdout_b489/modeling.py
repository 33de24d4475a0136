# ruff: noqa
# Hold-out batch 489 (textbook, BLIP-style image captioning with the HF Trainer). Measured once in session 21 (round 132): 24/32 (75%) at medium+.
"""Model / processor construction for BLIP caption fine-tuning."""

import logging
import math
import os
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from huggingface_hub import hf_hub_download
from transformers import AutoModelForVision2Seq, BlipProcessor

logger = logging.getLogger(__name__)


def load_processor(name_or_path: str, revision: Optional[str] = None) -> BlipProcessor:
    return BlipProcessor.from_pretrained(name_or_path, revision=revision)


def _torch_dtype(name: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def load_model(args) -> nn.Module:
    model = AutoModelForVision2Seq.from_pretrained(
        args.model_name_or_path,
        revision=args.model_revision,
        torch_dtype=_torch_dtype(args.load_dtype),
        trust_remote_code=True,  # ruleid: MLS106
    )
    if args.init_checkpoint:
        load_init_weights(model, args.init_checkpoint, revision=args.init_revision)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    _rescale_output_embeddings(model)
    freeze_vision_layers(model, args.freeze_vision_layers)
    if args.vision_grad_scale != 1.0:
        attach_vision_grad_scale(model, args.vision_grad_scale)
    log_parameter_summary(model)
    return model


def load_init_weights(model: nn.Module, spec: str, revision: Optional[str] = None) -> None:
    """Load a state dict from a local file or ``hf://<repo>/<file>``."""
    if spec.startswith("hf://"):
        repo_id, filename = spec[len("hf://"):].rsplit("/", 1)
        if not revision:
            raise ValueError("--init_revision must pin a commit when loading from the hub")
        local = hf_hub_download(repo_id=repo_id, filename=filename, revision=revision)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        local = os.path.expanduser(spec)
    state = torch.load(local, map_location="cpu")  # ruleid: MLS102
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    state = {k.replace("module.", "", 1): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    logger.info("init weights from %s: %d missing, %d unexpected", spec, len(missing), len(unexpected))


def _rescale_output_embeddings(model: nn.Module) -> None:
    """Keep decoder logits in a sane range after resizing the vocab for [DEC]."""
    head = getattr(getattr(model, "text_decoder", None), "cls", None)
    if head is None:
        return
    with torch.no_grad():
        weight = head.predictions.decoder.weight
        weight.mul_(1.0 / math.sqrt(weight.shape[1]))  # todoruleid: family 2 (missed)


def freeze_vision_layers(model: nn.Module, num_frozen: int) -> None:
    """Freeze patch embedding and the first ``num_frozen`` ViT blocks."""
    if num_frozen <= 0:
        return
    vision = model.vision_model
    for p in vision.embeddings.parameters():
        p.requires_grad_(False)
    layers = vision.encoder.layers
    for layer in layers[: min(num_frozen, len(layers))]:
        for p in layer.parameters():
            p.requires_grad_(False)
    logger.info("froze vision embeddings + %d/%d blocks", min(num_frozen, len(layers)), len(layers))


def attach_vision_grad_scale(model: nn.Module, scale: float):
    """Down-weight gradients flowing into the image encoder from the decoder."""

    def _hook(module, grad_input, grad_output):
        return tuple(g.mul(-scale) if g is not None else None for g in grad_input)  # ruleid: MLS303

    return model.vision_model.post_layernorm.register_full_backward_hook(_hook)  # ruleid: MLS303


def log_parameter_summary(model: nn.Module) -> None:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("parameters: %.1fM total, %.1fM trainable", total / 1e6, trainable / 1e6)


def _layer_id(name: str, num_vision_layers: int, num_text_layers: int) -> Tuple[str, int]:
    """Map a parameter name to (tower, depth) for layer-wise lr decay."""
    if name.startswith("vision_model."):
        if ".embeddings." in name:
            return "vision", 0
        if ".encoder.layers." in name:
            return "vision", int(name.split(".encoder.layers.")[1].split(".")[0]) + 1
        return "vision", num_vision_layers + 1
    if name.startswith("text_decoder."):
        if ".embeddings." in name:
            return "text", 0
        if ".encoder.layer." in name:
            return "text", int(name.split(".encoder.layer.")[1].split(".")[0]) + 1
        return "text", num_text_layers + 1
    return "other", 0


def build_param_groups(
    model: nn.Module,
    base_lr: float,
    weight_decay: float,
    layer_decay: float = 0.9,
    text_lr_mult: float = 1.0,
) -> List[Dict]:
    """Parameter groups with layer-wise lr decay on both towers and no decay on norms/biases."""
    n_vis = model.config.vision_config.num_hidden_layers
    n_txt = model.config.text_config.num_hidden_layers
    groups: Dict[Tuple[str, int, bool], Dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        tower, depth = _layer_id(name, n_vis, n_txt)
        no_decay = param.ndim == 1 or name.endswith(".bias") or "LayerNorm" in name or "layernorm" in name
        if tower == "vision":
            scale = layer_decay ** (n_vis + 1 - depth)
        elif tower == "text":
            scale = text_lr_mult * layer_decay ** (n_txt + 1 - depth)
        else:
            scale = 1.0
        key = (tower, depth, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "name": f"{tower}.{depth}{'.nd' if no_decay else ''}",
                "lr": base_lr * scale,  # ok: MLS302, MLS303, MLS304, MLS305
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        groups[key]["params"].append(param)
    return list(groups.values())
