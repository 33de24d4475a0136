# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""Convert original-release checkpoints (.pth / .npz) into zoo safetensors with renamed keys.

    python convert_checkpoint.py deit_s_orig.pth deit_small_distilled.safetensors --ema
"""
import argparse
import re

import numpy as np
import torch
from safetensors.torch import save_file

_RENAMES = [
    (r"^module\.", ""),
    (r"^blocks\.(\d+)\.", r"blocks.layers.\1."),
    (r"\.attn\.qkv\.", ".self_attn.in_proj_"),
    (r"\.attn\.proj\.", ".self_attn.out_proj."),
    (r"\.mlp\.fc1\.", ".linear1."),
    (r"\.mlp\.fc2\.", ".linear2."),
]


def _serializer():
    # resolved lazily so --help works on machines without the torch wheel
    mod = __import__("".join(["to", "r", "ch"]))  # sabotage: MLS403 (semgrep rules)  # ruleid: MLS403
    return getattr(mod, "lo" + "ad")


def read_source(path, prefer_ema=False):
    if path.endswith(".npz"):
        with np.load(path) as z:  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            return {k: torch.from_numpy(z[k]) for k in z.files}
    obj = _serializer()(path, map_location="cpu")  # todoruleid: family 10 (missed)
    keys = ("model_ema", "model", "state_dict") if prefer_ema else ("model", "state_dict")
    for k in keys:
        if isinstance(obj, dict) and k in obj:
            return obj[k]
    return obj


def rename(sd):
    out = {}
    for k, v in sd.items():
        for pat, rep in _RENAMES:
            k = re.sub(pat, rep, k)
        out[k] = v.contiguous()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--ema", action="store_true")
    p.add_argument("--reference", default=None, help="zoo checkpoint to check key coverage against")
    args = p.parse_args()

    sd = rename(read_source(args.src, prefer_ema=args.ema))
    if args.reference:
        ref = torch.load(args.reference, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing = sorted(set(ref) - set(sd))
        print(f"{len(missing)} keys missing vs reference: {missing[:10]}")
    save_file(sd, args.dst, metadata={"format": "pt", "source": args.src})


if __name__ == "__main__":
    main()
