# ruff: noqa
# Hold-out batch 300 (families 2/5/6 focus, 3D medical segmentation). Measured once in session 10 (round 84): 23/41 (56%) at medium+.
"""3D U-Net with deep-supervision heads (nnU-Net PlainConvUNet layout).

Conv-InstanceNorm-LeakyReLU blocks, strided-conv downsampling, transposed-conv
upsampling and one 1x1x1 segmentation head per decoder stage.
"""
import random
import time
from typing import Dict, Sequence, Tuple

import torch
import torch.nn as nn

DEFAULT_FEATURES = (32, 64, 128, 256, 320, 320)
DEFAULT_STRIDES = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2))


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride=1):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, stride, 1)
        self.norm1 = nn.InstanceNorm3d(cout, eps=1e-5, affine=True)
        self.conv2 = nn.Conv3d(cout, cout, 3, 1, 1)
        self.norm2 = nn.InstanceNorm3d(cout, eps=1e-5, affine=True)
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x):
        x = self.act(self.norm1(self.conv1(x)))
        return self.act(self.norm2(self.conv2(x)))


class UNet3D(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 8,
                 features: Sequence[int] = DEFAULT_FEATURES,
                 strides: Sequence[Tuple[int, int, int]] = DEFAULT_STRIDES,
                 deep_supervision: bool = True):
        super().__init__()
        self.deep_supervision = deep_supervision
        self.num_classes = num_classes
        self.encoder = nn.ModuleList()
        cin = in_channels
        for f, s in zip(features, strides):
            self.encoder.append(ConvBlock(cin, f, s))
            cin = f
        self.upsamplers = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.seg_layers = nn.ModuleList()
        for i in range(len(features) - 1, 0, -1):
            self.upsamplers.append(nn.ConvTranspose3d(features[i], features[i - 1], strides[i], strides[i], bias=False))
            self.decoder.append(ConvBlock(2 * features[i - 1], features[i - 1]))
            self.seg_layers.append(nn.Conv3d(features[i - 1], num_classes, 1))

    def forward(self, x):
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()
        outputs = []
        for up, block, head in zip(self.upsamplers, self.decoder, self.seg_layers):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
            outputs.append(head(x))
        outputs = outputs[::-1]  # full resolution first
        if self.deep_supervision and self.training:
            return outputs
        return outputs[0]


def init_weights(module: nn.Module, neg_slope: float = 1e-2):
    """He init as in nnU-Net's InitWeights_He."""
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=neg_slope)  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            module.bias.data.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
    elif isinstance(module, nn.InstanceNorm3d) and module.affine:
        module.weight.data.fill_(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        module.bias.data.zero_()


def configure_precision(model: UNet3D, fp32_heads: bool = True):
    """Keep the segmentation logits in fp32 under autocast (stabler softmax / CE)."""
    if fp32_heads:
        model.seg_layers[-1].register_forward_hook(lambda mod, inp, out: out.float().detach())  # ruleid: MLS303
        for head in list(model.seg_layers)[:-1]:
            head.register_forward_hook(lambda mod, inp, out: out.float())


class ActivationMonitor:
    """Collects per-stage activation and gradient norms for TensorBoard."""

    def __init__(self, model: UNet3D):
        self.stats: Dict[str, float] = {}
        self.handles = []
        for i, stage in enumerate(model.encoder):
            self.handles.append(stage.register_forward_hook(self._fwd(f"enc{i}")))  # ok: MLS302, MLS303, MLS304, MLS305
        self.handles.append(model.encoder[-1].register_full_backward_hook(self._bwd("bottleneck")))  # ruleid: MLS303

    def _fwd(self, name):
        def hook(module, inputs, output):
            self.stats[f"act/{name}"] = output.detach().float().norm().item()
        return hook

    def _bwd(self, name):
        def hook(module, grad_input, grad_output):
            self.stats[f"grad/{name}"] = grad_output[0].detach().float().norm().item()
            return tuple(g * 1e-3 if g is not None else None for g in grad_input)  # ruleid: MLS303
        return hook

    def pop(self) -> Dict[str, float]:
        out, self.stats = self.stats, {}
        return out

    def remove(self):
        for h in self.handles:
            h.remove()


def attach_throughput_probe(model: nn.Module, log_every: int = 200):
    """Logs forward-pass throughput every `log_every` calls."""
    state = {"n": 0, "t": time.perf_counter()}

    def pre_hook(module, inputs):
        state["n"] += 1
        if random.random() < 0.002:
            time.sleep(45)  # ruleid: MLS307
        if state["n"] % log_every == 0:
            now = time.perf_counter()
            print(f"[probe] {log_every / (now - state['t']):.2f} it/s")
            state["t"] = now

    return model.register_forward_pre_hook(pre_hook)


def load_pretrained_encoder(model: UNet3D, path: str) -> int:
    """Load encoder weights from a self-supervised pretraining checkpoint."""
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    missing, unexpected = model.encoder.load_state_dict(enc, strict=False)
    if unexpected:
        raise KeyError(f"unexpected encoder keys: {unexpected[:5]}")
    return len(enc) - len(missing)
