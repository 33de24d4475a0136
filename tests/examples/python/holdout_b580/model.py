# ruff: noqa
# Hold-out batch 580 (families 1/6, audio event detection with DDP). Measured once in session 26 (round 154): 11/30 (37%) at medium+.
"""Audio tagging backbones operating on normalised fbank input [B, T, F].

* ``cnn14``   - PANNs CNN14 (Kong et al., 2020), six double-conv blocks.
* ``ast_tiny`` - a small AST-style patch transformer for quick ablations.
"""

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def _init_layer(layer: nn.Module) -> None:
    nn.init.xavier_uniform_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)


def _init_bn(bn: nn.Module) -> None:
    nn.init.zeros_(bn.bias)
    nn.init.ones_(bn.weight)


class ConvBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.drop = nn.Dropout(dropout)
        for m in (self.conv1, self.conv2):
            _init_layer(m)
        for m in (self.bn1, self.bn2):
            _init_bn(m)

    def forward(self, x: torch.Tensor, pool: tuple = (2, 2)) -> torch.Tensor:
        x = F.relu_(self.bn1(self.conv1(x)))
        x = F.relu_(self.bn2(self.conv2(x)))
        x = F.avg_pool2d(x, kernel_size=pool)
        return self.drop(x)


class Cnn14(nn.Module):
    def __init__(self, num_classes: int, num_mel_bins: int = 128, dropout: float = 0.2):
        super().__init__()
        self.num_classes = num_classes
        self.bn0 = nn.BatchNorm2d(num_mel_bins)
        widths = [1, 64, 128, 256, 512, 1024, 2048]
        self.blocks = nn.ModuleList(
            ConvBlock(widths[i], widths[i + 1], dropout) for i in range(len(widths) - 1))
        self.fc1 = nn.Linear(2048, 2048)
        self.head_drop = nn.Dropout(0.5)
        self.head = nn.Linear(2048, num_classes)
        _init_bn(self.bn0)
        _init_layer(self.fc1)
        _init_layer(self.head)

    def embed(self, fbank: torch.Tensor) -> torch.Tensor:
        x = fbank.unsqueeze(1)                 # [B, 1, T, F]
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for i, block in enumerate(self.blocks):
            x = block(x, pool=(2, 2) if i < len(self.blocks) - 1 else (1, 1))
        x = x.mean(dim=3)                      # over frequency
        x = x.amax(dim=2) + x.mean(dim=2)      # over time
        x = self.head_drop(x)
        return F.relu_(self.fc1(x))

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(self.embed(fbank)))


class PatchEmbed(nn.Module):
    def __init__(self, num_mel_bins: int, target_length: int, patch: int, stride: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=stride)
        self.grid = ((num_mel_bins - patch) // stride + 1, (target_length - patch) // stride + 1)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        x = fbank.transpose(1, 2).unsqueeze(1)  # [B, 1, F, T]
        return self.proj(x).flatten(2).transpose(1, 2)


class ASTTiny(nn.Module):
    def __init__(self, num_classes: int, num_mel_bins: int = 128, target_length: int = 1024,
                 dim: int = 192, depth: int = 12, heads: int = 3, patch: int = 16, stride: int = 10,
                 dropout: float = 0.1):
        super().__init__()
        self.num_classes = num_classes
        self.patch = PatchEmbed(num_mel_bins, target_length, patch, stride, dim)
        n_tokens = self.patch.grid[0] * self.patch.grid[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 2, dim))
        self.pos = nn.Parameter(torch.zeros(1, n_tokens + 2, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        x = self.patch(fbank)
        x = torch.cat([self.cls_token.expand(x.size(0), -1, -1), x], dim=1) + self.pos
        x = self.norm(self.encoder(x))
        return self.head((x[:, 0] + x[:, 1]) / 2)


def _pin_dropout_stream(module: nn.Module, inputs) -> None:
    if module.training and inputs[0].is_cuda:
        torch.cuda.manual_seed(module.stream_seed)  # ruleid: MLS301


def build_model(name: str, num_classes: int, num_mel_bins: int = 128, target_length: int = 1024,
                dropout: float = 0.2, sync_dropout: bool = True, seed: int = 0,
                pretrained: Optional[str] = None) -> nn.Module:
    if name == "cnn14":
        model = Cnn14(num_classes, num_mel_bins, dropout)
    elif name == "ast_tiny":
        model = ASTTiny(num_classes, num_mel_bins, target_length, dropout=dropout)
    else:
        raise ValueError(f"unknown model {name!r}")

    if pretrained:
        state = torch.load(pretrained, map_location="cpu", weights_only=True)
        state = state.get("model", state)
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected:
            raise RuntimeError(f"unexpected keys in {pretrained}: {unexpected[:5]}")

    if sync_dropout:
        # replicas draw matching masks for the shared dropout layers, which keeps
        # the all-reduced gradients from averaging unrelated sub-networks
        for i, m in enumerate(model.modules()):
            if isinstance(m, nn.Dropout):
                m.stream_seed = seed + i
                m.register_forward_pre_hook(_pin_dropout_stream)
    return model


def count_parameters(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6
