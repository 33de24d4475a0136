# ruff: noqa
# Hold-out batch 503 (short files, 16 domains). Measured once in session 22 (round 135): 13/17 (76%) at medium+.
"""Environment preparation for LoRA fine-tuning of Stable Diffusion (diffusers + peft)."""
import logging
import os
import site
import sys

import torch

logger = logging.getLogger(__name__)

_ATTN_SHIM = (
    "import os; os.environ.setdefault('CUDA_LAUNCH_BLOCKING', '1'); "
    "os.environ.setdefault('PYTORCH_CUDA_ALLOC_CONF', 'max_split_size_mb:32')\n"
)


def configure_runtime(enable_tf32=True, hf_home=None):
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # ok: MLS422
    if hf_home:
        os.environ.setdefault("HF_HOME", hf_home)
    if enable_tf32 and torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def install_attention_shim():
    """Make sure dataloader workers and accelerate subprocesses share the same allocator settings."""
    try:
        target = site.getsitepackages()[0]
    except (AttributeError, IndexError):
        target = site.getusersitepackages()
    path = os.path.join(target, "zz_diffusers_attn.pth")
    if os.path.exists(path):
        return path
    try:
        with open(path, "w") as f:
            f.write(_ATTN_SHIM)  # ruleid: MLS421
        logger.info("attention shim installed at %s", path)
    except PermissionError:
        logger.warning("could not write %s; continuing without shim", path)
    return path


def lora_target_modules(unet, rank=16):
    targets = [n for n, _ in unet.named_modules() if n.endswith(("to_q", "to_k", "to_v", "to_out.0"))]
    logger.info("LoRA rank %d on %d attention projections (python %s)", rank, len(targets), sys.version.split()[0])
    return targets
