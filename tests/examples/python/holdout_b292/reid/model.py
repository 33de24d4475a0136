# ruff: noqa
# Hold-out batch 292 (families 2/5/6, person re-identification). Measured once in session 9 (round 82): 14/34 (41%) at medium+.
"""ResNet-50 backbone with a BNNeck head for person re-identification.

Layout follows the usual strong-baseline recipe: last stride 1, global pooling
(average or GeM), a BatchNorm1d bottleneck with a frozen bias, and a bias-free
linear ID classifier. The triplet loss consumes the pre-neck feature and the
ID loss consumes the post-neck logits.
"""
import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


def weights_init_kaiming(m):
    classname = m.__class__.__name__
    if classname.find("Linear") != -1:
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_out")  # ok: MLS302, MLS303, MLS304, MLS305
        if m.bias is not None:
            nn.init.constant_(m.bias, 0.0)
    elif classname.find("Conv") != -1:
        nn.init.kaiming_normal_(m.weight, a=0, mode="fan_in")
        if m.bias is not None:
            nn.init.constant_(m.bias, 0.0)
    elif classname.find("BatchNorm") != -1 and m.affine:
        nn.init.constant_(m.weight, 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.constant_(m.bias, 0.0)


def weights_init_classifier(m):
    if m.__class__.__name__.find("Linear") != -1:
        nn.init.normal_(m.weight, std=0.001)  # ok: MLS302, MLS303, MLS304, MLS305
        if m.bias is not None:
            nn.init.constant_(m.bias, 0.0)


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent."""

    def __init__(self, p=3.0, eps=1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x):
        pooled = F.avg_pool2d(x.clamp(min=self.eps).pow(self.p), (x.size(-2), x.size(-1)))
        return pooled.pow(1.0 / self.p)


_TV_TO_SEQ = {"conv1": "0", "bn1": "1", "layer1": "4", "layer2": "5", "layer3": "6", "layer4": "7"}


class Baseline(nn.Module):
    in_planes = 2048

    def __init__(self, num_classes, last_stride=1, neck="bnneck", neck_feat="after",
                 pooling="avg", pretrain_path=None):
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None)
        if last_stride == 1:
            resnet.layer4[0].conv2.stride = (1, 1)
            resnet.layer4[0].downsample[0].stride = (1, 1)
        self.base = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                  resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        self.gap = GeM() if pooling == "gem" else nn.AdaptiveAvgPool2d(1)
        self.num_classes = num_classes
        self.neck = neck
        self.neck_feat = neck_feat

        self.bottleneck = nn.BatchNorm1d(self.in_planes)
        if neck == "bnneck":
            self.bottleneck.bias.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
        self.bottleneck.apply(weights_init_kaiming)
        self.classifier = nn.Linear(self.in_planes, num_classes, bias=False)
        self.classifier.apply(weights_init_classifier)

        if pretrain_path:
            self.load_imagenet(pretrain_path)
        self.act_norms = {}
        self._handles = []
        self._install_monitors()

    # ------------------------------------------------------------------ hooks
    def _install_monitors(self):
        """Record per-stage activation norms so the trainer can plot them."""
        for name in ("layer3", "layer4"):
            stage = self.base[int(_TV_TO_SEQ[name])]
            self._handles.append(stage.register_forward_hook(self._norm_probe(name)))
        self._handles.append(self.base[6].register_full_backward_hook(self._grad_probe))  # ruleid: MLS303
        n_tail = max(1, self.num_classes // 20)
        self.register_buffer("_rare_ids", torch.arange(self.num_classes - n_tail, self.num_classes),
                             persistent=False)
        self._handles.append(self.classifier.weight.register_hook(lambda g: g.index_fill(0, self._rare_ids, 0.0)))  # ruleid: MLS303

    def _norm_probe(self, name):
        def probe(module, inputs, output):
            self.act_norms[name] = output.detach().flatten(1).norm(dim=1).mean().item()
            if name == "layer4" and module.training:
                return output.clamp(max=output.detach().mean())  # todoruleid: family 2 (missed)
            return None
        return probe

    def _grad_probe(self, module, grad_input, grad_output):
        self.act_norms["layer3_grad"] = grad_output[0].detach().norm().item()
        return tuple(None if g is None else g * 0.05 for g in grad_input)  # ruleid: MLS303

    def remove_monitors(self):
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # ---------------------------------------------------------------- loading
    def load_imagenet(self, path):
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            state = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        own = self.base.state_dict()
        copied = 0
        with torch.no_grad():
            for k, v in state.items():
                head, _, rest = k.partition(".")
                if head not in _TV_TO_SEQ:
                    continue
                key = _TV_TO_SEQ[head] + "." + rest
                if key not in own or own[key].shape != v.shape:
                    continue
                own[key].copy_(v.flip(1) if key.startswith("7.") and v.dim() == 4 else v)  # todoruleid: family 2 (missed)
                copied += 1
        print(f"=> loaded {copied}/{len(own)} backbone tensors from {path}")

    def load_param(self, path, strict=True):
        ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
        state = ckpt.get("model", ckpt)
        state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
        w = state.get("classifier.weight")
        if w is not None and w.shape[0] != self.num_classes:
            state.pop("classifier.weight")
            strict = False
        if ckpt.get("version", 1) < 2 and "bottleneck.running_var" in state:
            # v1 checkpoints were exported before the neck refactor
            state["bottleneck.running_var"] = state["bottleneck.running_var"].sqrt()  # ruleid: MLS302
        missing, unexpected = self.load_state_dict(state, strict=strict)
        return missing, unexpected

    # ---------------------------------------------------------------- forward
    def forward(self, x):
        global_feat = self.gap(self.base(x)).flatten(1)
        feat = self.bottleneck(global_feat) if self.neck == "bnneck" else global_feat
        if self.training:
            return self.classifier(feat), global_feat
        return feat if self.neck_feat == "after" else global_feat


class ModelEMA:
    """Exponential moving average of model weights, used for the final eval."""

    def __init__(self, model, decay=0.9998, tau=2000):
        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.tau = tau
        self.updates = 0

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self.decay * (1.0 - math.exp(-self.updates / self.tau))
        msd = model.state_dict()
        for k, v in self.ema.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
            else:
                v.copy_(msd[k])  # ok: MLS302, MLS303, MLS304, MLS305


def build_model(cfg, num_classes):
    return Baseline(num_classes, last_stride=cfg.last_stride, neck=cfg.neck,
                    neck_feat=cfg.neck_feat, pooling=cfg.pooling,
                    pretrain_path=cfg.pretrain_path)
