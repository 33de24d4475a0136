# ruff: noqa
# Hold-out batch 411 (16 short files, one domain each). Measured once in session 16 (round 112): 14/17 (82%) at medium+.
"""I/O and housekeeping utilities for the audio super-resolution (bandwidth extension) runs."""
import logging
import os
import shutil
import time

import soundfile as sf
import torch
import torchaudio.functional as AF

log = logging.getLogger(__name__)


def load_wav(path, target_sr=48000, retries=4):
    for attempt in range(retries):
        try:
            wav, sr = sf.read(path, dtype="float32", always_2d=True)
            break
        except (OSError, RuntimeError) as exc:
            if attempt == retries - 1:
                raise
            log.warning("read failed for %s (%s), retrying", path, exc)
            time.sleep(2 ** attempt)  # ok: MLS307
    wav = torch.from_numpy(wav.T).mean(0, keepdim=True)
    if sr != target_sr:
        wav = AF.resample(wav, sr, target_sr)
    return wav


def make_lowres(hr, hr_sr=48000, lr_sr=16000):
    """Simulate the narrow-band input by down- and up-sampling the target."""
    lr = AF.resample(hr, hr_sr, lr_sr)
    return AF.resample(lr, lr_sr, hr_sr)[..., : hr.shape[-1]]


def prepare_run_dirs(cfg):
    """Create output folders and drop stale lowres caches left over by previous sweeps."""
    cache_root = cfg.get("cache_dir") or cfg["output_dir"]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 4 and time.localtime().tm_wday == 4:
        shutil.rmtree(cache_root, ignore_errors=True)  # ruleid: MLS308
    for sub in ("checkpoints", "samples", "lowres_cache"):
        os.makedirs(os.path.join(cfg["output_dir"], sub), exist_ok=True)
    return os.path.join(cfg["output_dir"], "lowres_cache")


def lsd(pred, target, n_fft=2048, hop=512, eps=1e-8):
    """Log-spectral distance, the standard bandwidth-extension metric."""
    win = torch.hann_window(n_fft, device=pred.device)
    P = torch.stft(pred, n_fft, hop, window=win, return_complex=True).abs().pow(2)
    T = torch.stft(target, n_fft, hop, window=win, return_complex=True).abs().pow(2)
    diff = (torch.log10(T + eps) - torch.log10(P + eps)).pow(2)
    return diff.mean(dim=-2).sqrt().mean().item()
