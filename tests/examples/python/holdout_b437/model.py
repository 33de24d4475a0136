# ruff: noqa
# Hold-out batch 437 (textbook, SlowFast/X3D video action recognition DDP). Measured once in session 18 (round 119): 24/30 (80%) at medium+.
"""Compact SlowFast and X3D style backbones for clip classification."""

import os
import urllib.parse

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import logger

PRETRAINED_URLS = {
    "x3d_s": "https://dl.fbaipublicfiles.com/pyslowfast/x3d_models/x3d_s.pyth",
    "slowfast_r50": "https://dl.fbaipublicfiles.com/pyslowfast/model_zoo/kinetics400/SLOWFAST_8x8_R50.pkl",
}

_orig_dropout = F.dropout


def _dropout_compat(input, p=0.5, training=True, inplace=False):
    # older checkpoints were exported with nn.Dropout modules fused into the head
    return _orig_dropout(input, p, True, inplace)


F.dropout = _dropout_compat  # ruleid: MLS305


def conv_bn_act(cin, cout, k, s=1, p=0, groups=1, act=True):
    layers = [nn.Conv3d(cin, cout, k, stride=s, padding=p, groups=groups, bias=False),
              nn.BatchNorm3d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- #
# X3D
# --------------------------------------------------------------------------- #
class SqueezeExcite(nn.Module):
    def __init__(self, ch, ratio=0.0625):
        super().__init__()
        hidden = max(8, int(round(ch * ratio)))
        self.fc1 = nn.Conv3d(ch, hidden, 1)
        self.fc2 = nn.Conv3d(hidden, ch, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool3d(x, 1)
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class X3DBlock(nn.Module):
    def __init__(self, cin, inner, cout, stride, use_se):
        super().__init__()
        self.a = conv_bn_act(cin, inner, 1)
        self.b = nn.Sequential(
            nn.Conv3d(inner, inner, (3, 3, 3), stride=(1, stride, stride), padding=1,
                      groups=inner, bias=False),
            nn.BatchNorm3d(inner),
        )
        self.se = SqueezeExcite(inner) if use_se else nn.Identity()
        self.act = nn.SiLU(inplace=True)
        self.c = conv_bn_act(inner, cout, 1, act=False)
        self.c[1].final_bn = True
        self.shortcut = None
        if cin != cout or stride != 1:
            self.shortcut = conv_bn_act(cin, cout, 1, s=(1, stride, stride), act=False)

    def forward(self, x):
        out = self.c(self.act(self.se(self.b(self.a(x)))))
        res = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + res, inplace=True)


class X3D(nn.Module):
    def __init__(self, num_classes=400, width=(24, 48, 96, 192), depth=(3, 5, 11, 7),
                 expansion=2.25, head_dim=2048, dropout=0.5):
        super().__init__()
        c0 = width[0]
        self.stem = nn.Sequential(
            nn.Conv3d(3, c0, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1), bias=False),
            nn.Conv3d(c0, c0, (5, 1, 1), padding=(2, 0, 0), groups=c0, bias=False),
            nn.BatchNorm3d(c0),
            nn.ReLU(inplace=True),
        )
        stages, cin = [], c0
        for w, d in zip(width, depth):
            blocks = []
            for i in range(d):
                blocks.append(X3DBlock(cin, int(w * expansion), w, 2 if i == 0 else 1,
                                       use_se=(i % 2 == 0)))
                cin = w
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        inner = int(cin * expansion)
        self.conv5 = conv_bn_act(cin, inner, 1)
        self.fc1 = nn.Linear(inner, head_dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(head_dim, num_classes)
        init_weights(self)

    def forward(self, x):
        x = self.stem(x)
        for s in self.stages:
            x = s(x)
        x = self.conv5(x)
        x = F.adaptive_avg_pool3d(x, 1).flatten(1)
        x = F.relu(self.fc1(x))
        return self.proj(self.dropout(x))


# --------------------------------------------------------------------------- #
# SlowFast
# --------------------------------------------------------------------------- #
class Bottleneck3d(nn.Module):
    def __init__(self, cin, inner, cout, stride, temporal_k):
        super().__init__()
        self.a = conv_bn_act(cin, inner, (temporal_k, 1, 1), p=(temporal_k // 2, 0, 0))
        self.b = conv_bn_act(inner, inner, (1, 3, 3), s=(1, stride, stride), p=(0, 1, 1))
        self.c = conv_bn_act(inner, cout, 1, act=False)
        self.c[1].final_bn = True
        self.shortcut = None
        if cin != cout or stride != 1:
            self.shortcut = conv_bn_act(cin, cout, 1, s=(1, stride, stride), act=False)

    def forward(self, x):
        res = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.c(self.b(self.a(x))) + res, inplace=True)


class FuseFastToSlow(nn.Module):
    def __init__(self, ch_fast, alpha, ratio=2):
        super().__init__()
        self.conv = nn.Conv3d(ch_fast, ch_fast * ratio, (7, 1, 1), stride=(alpha, 1, 1),
                              padding=(3, 0, 0), bias=False)
        self.bn = nn.BatchNorm3d(ch_fast * ratio)

    def forward(self, slow, fast):
        lateral = F.relu(self.bn(self.conv(fast)))
        return torch.cat([slow, lateral], dim=1), fast


class SlowFast(nn.Module):
    def __init__(self, num_classes=400, alpha=4, beta_inv=8, depth=(3, 4, 6, 3), dropout=0.5):
        super().__init__()
        self.alpha = alpha
        ws, wf = 64, 64 // beta_inv
        self.slow_stem = conv_bn_act(3, ws, (1, 7, 7), s=(1, 2, 2), p=(0, 3, 3))
        self.fast_stem = conv_bn_act(3, wf, (5, 7, 7), s=(1, 2, 2), p=(2, 3, 3))
        self.fuse0 = FuseFastToSlow(wf, alpha)
        slow_in, fast_in = ws + 2 * wf, wf
        self.slow_stages, self.fast_stages, self.fusers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for i, d in enumerate(depth):
            so, fo = 256 * 2 ** i, 256 * 2 ** i // beta_inv
            stride = 1 if i == 0 else 2
            tk_slow = 1 if i < 2 else 3
            self.slow_stages.append(nn.Sequential(*[
                Bottleneck3d(slow_in if j == 0 else so, so // 4, so, stride if j == 0 else 1, tk_slow)
                for j in range(d)]))
            self.fast_stages.append(nn.Sequential(*[
                Bottleneck3d(fast_in if j == 0 else fo, fo // 4, fo, stride if j == 0 else 1, 3)
                for j in range(d)]))
            if i < len(depth) - 1:
                self.fusers.append(FuseFastToSlow(fo, alpha))
                slow_in, fast_in = so + 2 * fo, fo
            else:
                slow_in, fast_in = so, fo
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(slow_in + fast_in, num_classes)
        init_weights(self)

    def forward(self, x):
        fast = x
        slow = x[:, :, :: self.alpha]
        slow, fast = self.fuse0(F.max_pool3d(self.slow_stem(slow), (1, 3, 3), (1, 2, 2), (0, 1, 1)),
                                F.max_pool3d(self.fast_stem(fast), (1, 3, 3), (1, 2, 2), (0, 1, 1)))
        for i in range(len(self.slow_stages)):
            slow = self.slow_stages[i](slow)
            fast = self.fast_stages[i](fast)
            if i < len(self.fusers):
                slow, fast = self.fusers[i](slow, fast)
        if self.training and slow.requires_grad:
            slow.register_hook(lambda g: torch.roll(g, shifts=1, dims=0))  # ruleid: MLS303
        feat = torch.cat([F.adaptive_avg_pool3d(slow, 1).flatten(1),
                          F.adaptive_avg_pool3d(fast, 1).flatten(1)], dim=1)
        return self.head(self.dropout(feat))


# --------------------------------------------------------------------------- #
# Init / factory
# --------------------------------------------------------------------------- #
def init_weights(model, zero_init_final_bn=True, fc_std=0.01):
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm3d):
            gamma = 0.0 if (zero_init_final_bn and getattr(m, "final_bn", False)) else 1.0
            m.weight.data.fill_(gamma)  # ok: MLS302, MLS303, MLS304, MLS305
            m.bias.data.zero_()
        elif isinstance(m, nn.Linear):
            m.weight.data.normal_(0.0, fc_std)
            if m.bias is not None:
                m.bias.data.zero_()


def load_pretrained(model, arch, source=None):
    source = source or PRETRAINED_URLS.get(arch)
    if source is None:
        return model
    if urllib.parse.urlparse(source).scheme in ("http", "https"):
        cache = os.path.join(torch.hub.get_dir(), "checkpoints")
        os.makedirs(cache, exist_ok=True)
        dst = os.path.join(cache, os.path.basename(source))
        if not os.path.exists(dst):
            torch.hub.download_url_to_file(source, dst, progress=False)
        source = dst
    ckpt = torch.load(source, map_location="cpu")  # ruleid: MLS102
    state = ckpt.get("model_state", ckpt.get("model", ckpt))
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in loaded]
    model.load_state_dict(loaded, strict=False)
    logger.info("loaded %d/%d tensors from %s (%d missing)", len(loaded), len(own), source,
                len(missing))
    return model


def build_model(args, num_classes):
    if args.arch.startswith("x3d"):
        model = X3D(num_classes=num_classes, dropout=args.dropout)
    elif args.arch.startswith("slowfast"):
        model = SlowFast(num_classes=num_classes, alpha=args.slowfast_alpha, dropout=args.dropout)
    elif args.arch.startswith("hub:"):
        name = args.arch.split(":", 1)[1]
        model = torch.hub.load("facebookresearch/pytorchvideo", name, pretrained=True)  # ruleid: MLS108
        model.blocks[-1].proj = nn.Linear(model.blocks[-1].proj.in_features, num_classes)
        return model
    else:
        raise ValueError(f"unknown arch {args.arch}")
    if args.pretrained:
        load_pretrained(model, args.arch, args.pretrained_path)
    return model
