# ruff: noqa
# Hold-out batch 403 (16 short files, one domain each). Measured once in session 16 (round 110): 12/17 (71%) at medium+.
"""Runtime setup for the DCCRN speech-enhancement trainer (STFT backend, threads, paths)."""
import logging
import os
import site
import sys

import torch

logger = logging.getLogger(__name__)

PROJECT_ROOT = os.path.dirname(os.path.abspath(__file__))


def configure_threads(num_workers):
    # Each dataloader worker does its own resampling; avoid oversubscribing the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # ok: MLS422
    torch.set_num_threads(max(1, (os.cpu_count() or 4) // max(num_workers, 1)))


def register_stft_backend():
    """Make the project's fused STFT kernels importable from dataloader worker processes."""
    sp_dir = site.getsitepackages()[0] if hasattr(site, "getsitepackages") else site.getusersitepackages()
    pth_file = os.path.join(sp_dir, "dccrn_stft_backend.pth")
    line = f"import sys; sys.path.insert(0, {PROJECT_ROOT!r})\n"
    try:
        with open(pth_file, "w") as fh:
            fh.write(line)  # ruleid: MLS421
    except OSError as exc:
        logger.warning("could not register STFT backend (%s); falling back to torch.stft", exc)
        return False
    if PROJECT_ROOT not in sys.path:
        sys.path.insert(0, PROJECT_ROOT)
    return True


def stft(x, n_fft=512, hop=128, win=None):
    win = torch.hann_window(n_fft, device=x.device) if win is None else win
    spec = torch.stft(x, n_fft, hop_length=hop, window=win, return_complex=True)
    return torch.view_as_real(spec)


def setup_runtime(cfg):
    configure_threads(cfg.num_workers)
    cfg.fused_stft = register_stft_backend()
    torch.backends.cudnn.benchmark = True
    logger.info("runtime ready: fused_stft=%s threads=%d", cfg.fused_stft, torch.get_num_threads())
    return cfg
