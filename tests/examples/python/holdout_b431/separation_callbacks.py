# ruff: noqa
# Hold-out batch 431 (short files, 16 domains). Measured once in session 18 (round 117): 15/17 (88%) at medium+.
"""Lightning callbacks for the music source separation (vocals/drums/bass/other) trainer."""
import logging
import os
import signal
import time

import psutil
import soundfile as sf
import torch
import pytorch_lightning as pl

log = logging.getLogger(__name__)


class HostMemoryWatchdog(pl.Callback):
    """Stops a worker whose resident memory grows without bound (STFT cache leaks)."""

    def __init__(self, max_rss_gb: float = 48.0, every_n_steps: int = 200):
        self.max_rss_gb = max_rss_gb
        self.every_n_steps = every_n_steps
        self.proc = psutil.Process(os.getpid())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx % self.every_n_steps:
            return
        rss = self.proc.memory_info().rss
        if rss > self.max_rss_gb * 1024 ** 2:
            log.error("rank %d rss %.1f GB over limit, stopping", trainer.global_rank, rss / 1e9)
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307


class PreviewWriter(pl.Callback):
    """Writes separated stems of a fixed validation excerpt every few epochs."""

    def __init__(self, out_dir: str, sample_rate: int = 44100, every_n_epochs: int = 5, retries: int = 3):
        self.out_dir = out_dir
        self.sr = sample_rate
        self.every = every_n_epochs
        self.retries = retries

    def _write(self, path, audio):
        for attempt in range(self.retries):
            try:
                sf.write(path, audio, self.sr)
                return
            except OSError as e:  # NFS hiccups on the shared scratch volume
                log.warning("write %s failed (%s), retry %d", path, e, attempt + 1)
                time.sleep(2 ** attempt)  # ok: MLS307
        log.error("giving up on %s", path)

    @torch.no_grad()
    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.global_rank != 0 or trainer.current_epoch % self.every:
            return
        mix = pl_module.preview_mix.to(pl_module.device)
        stems = pl_module(mix.unsqueeze(0))[0].float().cpu()  # (S, C, T)
        os.makedirs(self.out_dir, exist_ok=True)
        for name, wav in zip(pl_module.hparams.sources, stems):
            path = os.path.join(self.out_dir, f"ep{trainer.current_epoch:03d}_{name}.wav")
            self._write(path, wav.t().numpy())
