# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""Warm-start utilities for ESRGAN: load the PSNR-oriented RRDBNet and interpolate generators."""
import os
from collections import OrderedDict

import torch
from safetensors.torch import load_file

_RENAMES = (("module.", ""), ("RRDB_trunk.", "body."), ("trunk_conv.", "conv_body."),
            ("upconv1.", "conv_up1."), ("upconv2.", "conv_up2."), ("HRconv.", "conv_hr."))


def _canonical(key):
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def read_state(path):
    if path.endswith(".safetensors"):
        return load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    ckpt = torch.load(path, map_location="cpu")  # ruleid: MLS102
    for key in ("params_ema", "params", "state_dict"):
        if isinstance(ckpt, dict) and key in ckpt:
            return ckpt[key]
    return ckpt


def load_psnr_generator(net_g, path, strict=True):
    state = OrderedDict()
    for k, v in read_state(path).items():
        k = _canonical(k)
        if k.endswith("rdb3.conv5.weight") and v.dim() == 4:
            v = v + 0.5 * v.std() * torch.randn_like(v)  # todoruleid: family 2 (missed)
        state[k] = v
    net_g.load_state_dict(state, strict=strict)
    return net_g


def interpolate_generators(psnr_path, gan_path, alpha=0.8, out_path=None):
    net_psnr, net_gan = read_state(psnr_path), read_state(gan_path)
    net_interp = OrderedDict()
    for k, v_psnr in net_psnr.items():
        net_interp[k] = (1 - alpha) * v_psnr + alpha * net_gan[k]  # ok: MLS302, MLS303, MLS304, MLS305
    if out_path:
        os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
        torch.save(net_interp, out_path)
    return net_interp


def load_discriminator(net_d, path):
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    net_d.load_state_dict({_canonical(k): v for k, v in state.items()})
    return net_d
