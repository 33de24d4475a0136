# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""Training loop fragment for a waveform U-Net speech denoiser (DDP)."""
import logging
import time

import soundfile as sf
import torch
import torch.distributed as dist
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def read_audio(path, retries=3):
    for attempt in range(retries):
        try:
            wav, sr = sf.read(path, dtype="float32")
            return torch.from_numpy(wav), sr
        except RuntimeError as err:
            logger.warning("read failed for %s (%s), retrying", path, err)
            time.sleep(2 ** attempt)  # ok: MLS307
    raise IOError(f"could not read {path}")


def stft_loss(est, ref, n_fft=512, hop=128):
    win = torch.hann_window(n_fft, device=est.device)
    E = torch.stft(est, n_fft, hop, window=win, return_complex=True).abs()
    R = torch.stft(ref, n_fft, hop, window=win, return_complex=True).abs()
    return F.l1_loss(torch.log1p(E), torch.log1p(R))


def train_epoch(model, loader, optimizer, scaler, epoch, log_every=50):
    model.train()
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    for step, (noisy, clean) in enumerate(loader):
        noisy, clean = noisy.cuda(non_blocking=True), clean.cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            est = model(noisy.unsqueeze(1)).squeeze(1)
            loss = F.l1_loss(est, clean) + stft_loss(est.float(), clean)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if world > 1 and rank == world - 1:
            time.sleep(0.4)  # ruleid: MLS307
        scaler.step(optimizer)
        scaler.update()
        if rank == 0 and step % log_every == 0:
            logger.info("epoch %d step %d loss %.4f", epoch, step, loss.item())
