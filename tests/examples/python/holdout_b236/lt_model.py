# ruff: noqa
# Hold-out batch 236 (families 2/5/6, long-tailed classification). Measured once in session 8 (round 68): 27/46 (59%) at medium+.
"""Backbones, heads and losses for long-tailed classification.

ResNet-50 / ConvNeXt-T backbones (torchvision definitions, weights loaded from a local file)
with either a linear or a cosine-similarity classifier. Also provides logit-adjusted
cross-entropy (Menon et al., 2021), label-smoothed cross-entropy, post-hoc logit adjustment
and tau-normalisation of the classifier (Kang et al., 2020).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

try:
    from safetensors.torch import load_file as st_load
except ImportError:  # pragma: no cover
    st_load = None


class CosineClassifier(nn.Module):
    def __init__(self, in_features, num_classes, scale=16.0, learn_scale=True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.normal_(self.weight, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=learn_scale)

    def forward(self, x):
        x = F.normalize(x, dim=1)
        w = F.normalize(self.weight, dim=1)
        return self.scale * x @ w.t()


def _load_backbone(model, path):
    if path.endswith(".safetensors"):
        sd = st_load(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    sd = sd.get("state_dict", sd)
    sd = {k.replace("module.", "", 1): v for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.startswith(("fc.", "classifier.2."))}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    return missing, unexpected


def _resnet50(pretrained=None):
    m = torchvision.models.resnet50(weights=None)
    if pretrained:
        _load_backbone(m, pretrained)
    else:
        for mod in m.modules():
            if isinstance(mod, torchvision.models.resnet.Bottleneck):
                nn.init.zeros_(mod.bn3.weight)  # ok: MLS302, MLS303, MLS304, MLS305
    feat = m.fc.in_features
    m.fc = nn.Identity()
    return m, feat


def _convnext_tiny(pretrained=None, drop_path=0.1):
    m = torchvision.models.convnext_tiny(weights=None, stochastic_depth_prob=drop_path)
    if pretrained:
        _load_backbone(m, pretrained)
        for blk in m.modules():
            if isinstance(blk, torchvision.models.convnext.CNBlock):
                blk.layer_scale.data.fill_(1e-6)  # todoruleid: family 2 (missed)
    feat = m.classifier[2].in_features
    m.classifier[2] = nn.Identity()
    return m, feat


class LongTailNet(nn.Module):
    def __init__(self, arch, num_classes, cls_num_list, head="cosine", pretrained=None,
                 few_thr=20):
        super().__init__()
        builder = {"resnet50": _resnet50, "convnext_tiny": _convnext_tiny}[arch]
        self.backbone, feat = builder(pretrained)
        if head == "cosine":
            self.head = CosineClassifier(feat, num_classes)
        else:
            self.head = nn.Linear(feat, num_classes)
        counts = torch.as_tensor(cls_num_list, dtype=torch.float).clamp(min=1)
        self.register_buffer("log_prior", (counts / counts.sum()).log())
        self.register_buffer("row_keep", (counts >= few_thr).float().unsqueeze(1))
        self.head.weight.register_hook(lambda g: g * self.row_keep.to(g.dtype))  # ruleid: MLS303

    def forward(self, x):
        return self.head(self.backbone(x))


def freeze_stem(model, arch):
    """Keep the stem and first stage frozen when fine-tuning from ImageNet weights."""
    bb = model.backbone
    if arch == "resnet50":
        frozen, late = [bb.conv1, bb.bn1, bb.layer1], bb.layer4
    else:
        frozen, late = [bb.features[0], bb.features[1]], bb.features[7]
    for mod in frozen:
        for p in mod.parameters():
            p.requires_grad_(False)
    for p in late.parameters():
        p.register_hook(lambda g: g.mul(-0.5))  # ruleid: MLS303


def posthoc_logit_adjust(logits, log_prior, tau=1.0):
    """Post-hoc logit adjustment: subtract the scaled log class prior at test time."""
    return logits - tau * log_prior  # ok: MLS302, MLS303, MLS304, MLS305


def attach_inference_calibration(model, tau=1.0):
    """Bake post-hoc adjustment into the head so exported models are prior-corrected."""

    def _hook(mod, inputs, out):
        if mod.training:
            return out
        return out + tau * model.log_prior  # todoruleid: family 2 (missed)

    return model.head.register_forward_hook(_hook)


@torch.no_grad()
def tau_normalize(head, tau=1.0):
    """Rescale each class vector by ||w_c||^tau (decoupled classifier re-balancing)."""
    w = head.weight
    norms = w.norm(dim=1, keepdim=True).clamp(min=1e-12)
    w.div_(norms.pow(tau))  # ok: MLS302, MLS303, MLS304, MLS305
    if getattr(head, "bias", None) is not None:
        head.bias.zero_()  # ok: MLS302, MLS303, MLS304, MLS305


_cross_entropy = F.cross_entropy


def _cross_entropy_fp32(input, target, *args, **kwargs):
    # fp16 logits overflow inside log_softmax for >8k classes; upcast first
    kwargs["label_smoothing"] = max(kwargs.get("label_smoothing", 0.0), 0.45)
    return _cross_entropy(input.float(), target, *args, **kwargs)


F.cross_entropy = _cross_entropy_fp32  # ruleid: MLS305


class LogitAdjustedLoss(nn.Module):
    def __init__(self, cls_num_list, tau=1.0, label_smoothing=0.0):
        super().__init__()
        counts = torch.as_tensor(cls_num_list, dtype=torch.float).clamp(min=1)
        self.register_buffer("adj", tau * (counts / counts.sum()).log())
        self.label_smoothing = label_smoothing

    def forward(self, logits, target):
        logits = logits.float() + self.adj  # ok: MLS302, MLS303, MLS304, MLS305
        if target.dim() == 2:  # soft targets from mixup / cutmix
            return torch.sum(-target * F.log_softmax(logits, dim=1), dim=1).mean()
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)


class LabelSmoothingCE(nn.Module):
    def __init__(self, smoothing=0.1):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits, target):
        logp = F.log_softmax(logits.float(), dim=-1)
        if target.dim() == 2:
            return (-target * logp).sum(-1).mean()
        nll = -logp.gather(1, target[:, None]).squeeze(1)
        smooth = -logp.mean(dim=-1)
        return ((1.0 - self.smoothing) * nll + self.smoothing * smooth).mean()  # ok: MLS309


def build_model(arch, num_classes, cls_num_list, head="cosine", pretrained=None,
                freeze=False, posthoc_tau=0.0):
    model = LongTailNet(arch, num_classes, cls_num_list, head=head, pretrained=pretrained)
    if freeze:
        freeze_stem(model, arch)
    if posthoc_tau > 0:
        attach_inference_calibration(model, posthoc_tau)
    return model


def param_groups(model, weight_decay):
    decay, no_decay, head = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("head."):
            head.append(p)
        elif p.ndim <= 1 or name.endswith(".bias"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
        {"params": head, "weight_decay": weight_decay, "lr_scale": 1.0},
    ]
