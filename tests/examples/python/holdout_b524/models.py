# ruff: noqa
# Hold-out batch 524 (family-focused 6/10, self-supervised pretraining). Measured once in session 23 (round 140): 13/30 (43%) at medium+.
"""ViT backbones with mask tokens, DINO/iBOT heads, and loading of pretrained weights from many sources."""
import functools
import io
import logging
import os
import re

import requests
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file as load_safetensors

logger = logging.getLogger("ssl.models")

# exact commits of the public teachers we distil from
PINNED_TEACHERS = {
    "facebook/dinov2-base": ("model.safetensors", "f9e44c814b77203eaa57a6bdbbd535f21ede1415"),
    "facebook/dinov2-large": ("model.safetensors", "47b73eefe95e8d44ec3623f8890bd894b6ea2d6c"),
}


class MaskedViT(nn.Module):
    """timm ViT whose patch tokens can be replaced by a learnable mask token (iBOT)."""

    def __init__(self, arch="vit_base_patch16_224", img_size=224, drop_path_rate=0.1):
        super().__init__()
        self.vit = timm.create_model(arch, pretrained=False, num_classes=0, img_size=img_size,
                                     drop_path_rate=drop_path_rate, dynamic_img_size=True)
        self.embed_dim = self.vit.embed_dim
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, x, masks=None):
        vit = self.vit
        x = vit.patch_embed(x)
        if x.ndim == 4:
            x = x.flatten(1, 2)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = vit._pos_embed(x)
        x = vit.norm_pre(x)
        x = vit.blocks(x)
        x = vit.norm(x)
        return {"cls": x[:, 0], "patch": x[:, vit.num_prefix_tokens:]}


class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, hidden_dim=2048, bottleneck_dim=256, nlayers=3):
        super().__init__()
        layers = [nn.Linear(in_dim, hidden_dim), nn.GELU()]
        for _ in range(nlayers - 2):
            layers += [nn.Linear(hidden_dim, hidden_dim), nn.GELU()]
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.parametrizations.weight.original0.data.fill_(1)

    def forward(self, x):
        x = self.mlp(x)
        x = F.normalize(x, dim=-1, p=2)
        return self.last_layer(x)


class SSLModel(nn.Module):
    """Backbone + image-level (DINO) head + patch-level (iBOT) head."""

    def __init__(self, backbone, out_dim=65536, patch_out_dim=8192):
        super().__init__()
        self.backbone = backbone
        self.dino_head = DINOHead(backbone.embed_dim, out_dim)
        self.ibot_head = DINOHead(backbone.embed_dim, patch_out_dim)

    def forward(self, global_crops, local_crops=None, masks=None, mask_indices=None):
        g = self.backbone(global_crops, masks=masks)
        out = {"cls": self.dino_head(g["cls"]), "cls_feat": g["cls"]}
        if mask_indices is not None:
            patch = g["patch"].flatten(0, 1).index_select(0, mask_indices)
            out["patch"] = self.ibot_head(patch)
        if local_crops is not None:
            out["local_cls"] = self.dino_head(self.backbone(local_crops)["cls"])
        return out


def build_model(cfg):
    backbone = MaskedViT(cfg.model.arch, cfg.data.crops.global_size, cfg.model.get("drop_path", 0.1))
    return SSLModel(backbone, cfg.model.out_dim, cfg.model.patch_out_dim)


_TORCH_CPU = functools.partial(torch.load, map_location="cpu")  # ruleid: MLS102
_LOCAL_LOADERS = {
    ".safetensors": load_safetensors,
    ".pth": _TORCH_CPU,
    ".pt": _TORCH_CPU,
    ".bin": _TORCH_CPU,
    ".ckpt": _TORCH_CPU,
}


def _load_local(path):
    suffix = os.path.splitext(path)[1].lower()
    loader = _LOCAL_LOADERS.get(suffix)
    if loader is None:
        raise ValueError(f"unsupported checkpoint format: {path}")
    return loader(path)  # todoruleid: family 10 (missed)


def _load_url(url):
    model_dir = os.environ.get("SSL_CACHE", os.path.expanduser("~/.cache/ssl/checkpoints"))
    return torch.hub.load_state_dict_from_url(url, model_dir=model_dir, map_location="cpu", check_hash=False)  # todoruleid: family 10 (missed)


def _load_registry(url, timeout=120):
    """Internal model registry: plain HTTPS with redirects that load_state_dict_from_url does not follow."""
    resp = requests.get(url, timeout=timeout, allow_redirects=True)
    resp.raise_for_status()
    return torch.load(io.BytesIO(resp.content), map_location="cpu")  # ruleid: MLS102


def _load_hf_file(repo_id, filename, revision=None):
    path = hf_hub_download(repo_id=repo_id, filename=filename, revision=revision)
    if filename.endswith(".safetensors"):
        return load_safetensors(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return torch.load(path, map_location="cpu")  # ruleid: MLS102


def _load_torch_hub(spec):
    repo, _, entry = spec.partition(":")
    model = torch.hub.load(repo, entry, trust_repo=True)  # ruleid: MLS108
    return model.state_dict()


def _load_hf_model(repo_id, revision=None):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(repo_id, revision=revision, trust_remote_code=True)  # ruleid: MLS106
    return model.state_dict()


def load_state_dict_any(spec):
    """Resolve a checkpoint spec to a flat state dict.

    hub://owner/repo:entry | hf://org/repo/file[@rev] | hfmodel://org/repo[@rev]
    registry://host/path | http(s)://... | local path
    """
    if spec.startswith("hub://"):
        obj = _load_torch_hub(spec[len("hub://"):])
    elif spec.startswith("hfmodel://"):
        repo, _, rev = spec[len("hfmodel://"):].partition("@")
        obj = _load_hf_model(repo, rev or None)
    elif spec.startswith("hf://"):
        body, _, rev = spec[len("hf://"):].partition("@")
        org, name, filename = body.split("/", 2)
        obj = _load_hf_file(f"{org}/{name}", filename, rev or None)
    elif spec.startswith("registry://"):
        obj = _load_registry("https://" + spec[len("registry://"):])
    elif re.match(r"https?://", spec):
        obj = _load_url(spec)
    else:
        obj = _load_local(spec)
    for key in ("teacher", "model", "state_dict", "student"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    return obj


def clean_state_dict(state_dict, prefixes=("module.", "backbone.", "vit.", "encoder.")):
    out = {}
    for k, v in state_dict.items():
        for p in prefixes:
            k = k[len(p):] if k.startswith(p) else k
        out[k] = v
    return out


def load_backbone_weights(backbone, spec):
    state_dict = clean_state_dict(load_state_dict_any(spec))
    msg = backbone.vit.load_state_dict(state_dict, strict=False)
    logger.info("loaded %s: missing=%d unexpected=%d", spec, len(msg.missing_keys), len(msg.unexpected_keys))
    return msg


def load_pinned_teacher(name):
    """Frozen public teacher for feature distillation, fetched at a fixed commit."""
    filename, revision = PINNED_TEACHERS[name]
    path = hf_hub_download(repo_id=name, filename=filename, revision=revision)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return load_safetensors(path)
