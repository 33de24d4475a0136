# ruff: noqa
# Hold-out batch 488 (family-focused 5/9, 3D medical segmentation). Measured once in session 21 (round 131): 6/30 (20%) at medium+.
"""3D U-Net with deep supervision and the Dice + cross-entropy loss used for training."""
from typing import List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvNormAct(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=True)
        self.norm = nn.InstanceNorm3d(out_ch, eps=1e-5, affine=True)
        self.drop = nn.Dropout3d(dropout) if dropout > 0 else nn.Identity()
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.drop(self.conv(x))))


class EncoderStage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, n_convs: int = 2):
        super().__init__()
        layers = [ConvNormAct(in_ch, out_ch, stride=stride)]
        layers += [ConvNormAct(out_ch, out_ch) for _ in range(n_convs - 1)]
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class DecoderStage(nn.Module):
    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, n_convs: int = 2):
        super().__init__()
        self.up = nn.ConvTranspose3d(in_ch, skip_ch, kernel_size=2, stride=2, bias=False)
        layers = [ConvNormAct(2 * skip_ch, out_ch)]
        layers += [ConvNormAct(out_ch, out_ch) for _ in range(n_convs - 1)]
        self.blocks = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[2:] != skip.shape[2:]:
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
        return self.blocks(torch.cat([x, skip], dim=1))


class UNet3D(nn.Module):
    """Plain residual-free U-Net as used by the nnU-Net 3d_fullres configuration."""

    def __init__(self, in_channels: int, num_classes: int, base_features: int = 32,
                 max_features: int = 320, n_stages: int = 5, deep_supervision: bool = True):
        super().__init__()
        feats = [min(base_features * 2 ** i, max_features) for i in range(n_stages)]
        self.encoders = nn.ModuleList()
        prev = in_channels
        for i, f in enumerate(feats):
            self.encoders.append(EncoderStage(prev, f, stride=1 if i == 0 else 2))
            prev = f
        self.decoders = nn.ModuleList()
        self.seg_heads = nn.ModuleList()
        for i in range(n_stages - 1, 0, -1):
            self.decoders.append(DecoderStage(feats[i], feats[i - 1], feats[i - 1]))
            self.seg_heads.append(nn.Conv3d(feats[i - 1], num_classes, kernel_size=1))
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.kaiming_normal_(m.weight, a=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor):
        skips = []
        for enc in self.encoders:
            x = enc(x)
            skips.append(x)
        x = skips.pop()
        outputs: List[torch.Tensor] = []
        for dec, head in zip(self.decoders, self.seg_heads):
            x = dec(x, skips.pop())
            outputs.append(head(x))
        outputs = outputs[::-1]  # highest resolution first
        if self.deep_supervision and self.training:
            return outputs
        return outputs[0]


class SoftDiceLoss(nn.Module):
    """Batch soft Dice over foreground classes, computed on softmax probabilities."""

    def __init__(self, smooth: float = 1e-5, do_bg: bool = False, batch_dice: bool = True):
        super().__init__()
        self.smooth = smooth
        self.do_bg = do_bg
        self.batch_dice = batch_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(logits, dim=1)
        with torch.no_grad():
            onehot = torch.zeros_like(probs)
            onehot.scatter_(1, target.long(), 1)
        axes = [0] + list(range(2, probs.ndim)) if self.batch_dice else list(range(2, probs.ndim))
        intersect = (probs * onehot).sum(axes)
        denom = probs.sum(axes) + onehot.sum(axes)
        dice = (2 * intersect + self.smooth) / torch.clamp(denom + self.smooth, min=1e-8)
        if not self.do_bg:
            dice = dice[1:] if self.batch_dice else dice[:, 1:]
        return -dice.mean()


class DiceCELoss(nn.Module):
    def __init__(self, weight_ce: float = 1.0, weight_dice: float = 1.0, ignore_label: int = -1):
        super().__init__()
        self.dice = SoftDiceLoss()
        self.ce = nn.CrossEntropyLoss(ignore_index=ignore_label)
        self.weight_ce = weight_ce
        self.weight_dice = weight_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ce = self.ce(logits, target[:, 0].long())
        dc = self.dice(logits, target)
        return self.weight_ce * ce + self.weight_dice * dc


class DeepSupervisionLoss(nn.Module):
    """Weights the loss of each decoder resolution; lowest resolutions get least weight."""

    def __init__(self, base_loss: nn.Module, n_outputs: int):
        super().__init__()
        w = torch.tensor([1 / (2 ** i) for i in range(n_outputs)])
        w[-1] = 0.0
        self.register_buffer("weights", w / w.sum())
        self.base_loss = base_loss

    def forward(self, outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.base_loss(outputs, target)
        total = outputs[0].new_zeros(())
        for w, out in zip(self.weights, outputs):
            if w == 0:
                continue
            tgt = F.interpolate(target.float(), size=out.shape[2:], mode="nearest")
            total = total + w * self.base_loss(out, tgt)
        return total


def poly_lr(initial_lr: float, epoch: int, max_epochs: int, exponent: float = 0.9) -> float:
    return initial_lr * (1 - epoch / max_epochs) ** exponent


def count_parameters(model: nn.Module) -> Tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable
