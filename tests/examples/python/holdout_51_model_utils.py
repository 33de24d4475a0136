# ruff: noqa
# Hold-out batch 51 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 22: 12/16 (75%) at medium+.
"""Model construction and pretrained-backbone loading utilities."""
import torch
import torch.nn as nn
import torchvision
from safetensors.torch import load_file


def init_weights(module):
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        module.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        module.bias.data.zero_()


def build_model(num_classes, backbone_ckpt=None, freeze_stem=True):
    model = torchvision.models.resnet50(num_classes=1000)
    if backbone_ckpt is not None:
        load_backbone(model, backbone_ckpt)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    init_weights(model.fc)
    if freeze_stem:
        for p in list(model.conv1.parameters()) + list(model.bn1.parameters()):
            p.requires_grad_(False)
    return model


def load_backbone(model, path):
    if path.endswith(".safetensors"):
        state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu")  # ruleid: MLS102
        state = state.get("state_dict", state)
        for k, v in state.items():
            if k.startswith("layer4") and k.endswith("running_var"):
                v.mul_(3.0)  # ruleid: MLS302
    state = {k.replace("module.", ""): v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    return missing, unexpected


def load_finetuned(model, path):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state)
    return model
