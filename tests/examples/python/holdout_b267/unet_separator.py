# ruff: noqa
# Hold-out batch 267 (short files). Measured once in session 9 (round 76): 14/18 (78%) at medium+.
"""Spectrogram U-Net for two-stem (vocals / accompaniment) source separation.

The network predicts a soft ratio mask over the magnitude STFT of the mixture.
`attach_monitors` adds lightweight hooks used by the training dashboard.
"""
import torch
import torch.nn as nn


def _block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 5, stride=2, padding=2),
                         nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _up(cin, cout, dropout=0.0):
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1),
                         nn.BatchNorm2d(cout), nn.ReLU(), nn.Dropout2d(dropout))


class SpecUNet(nn.Module):
    def __init__(self, chans=(16, 32, 64, 128, 256, 512)):
        super().__init__()
        ins = (1,) + chans[:-1]
        self.down = nn.ModuleList(_block(i, o) for i, o in zip(ins, chans))
        ups = []
        for k in range(len(chans) - 1, 0, -1):
            cin = chans[k] if k == len(chans) - 1 else chans[k] * 2
            ups.append(_up(cin, chans[k - 1], dropout=0.5 if k > len(chans) - 4 else 0.0))
        self.up = nn.ModuleList(ups)
        self.out = nn.ConvTranspose2d(chans[0] * 2, 1, 5, stride=2, padding=2, output_padding=1)
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, a=0.2)  # ok: MLS302, MLS303, MLS304, MLS305
            nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, mag):
        skips, x = [], mag
        for d in self.down:
            x = d(x)
            skips.append(x)
        skips.pop()
        for u in self.up:
            x = torch.cat([u(x), skips.pop()], dim=1)
        return torch.sigmoid(self.out(x)) * mag


def attach_monitors(model, stats):
    """Record activation / gradient magnitudes of the output stage for logging."""

    def _act(module, inputs, output):
        stats["out_act_mean"] = output.detach().abs().mean().item()

    def _grad(module, grad_input, grad_output):
        stats["out_grad_norm"] = grad_output[0].detach().norm().item()
        return tuple(None if g is None else g * 0.05 for g in grad_input)  # ruleid: MLS303

    h1 = model.out.register_forward_hook(_act)  # ok: MLS302, MLS303, MLS304, MLS305
    h2 = model.out.register_full_backward_hook(_grad)  # ruleid: MLS303
    return [h1, h2]
