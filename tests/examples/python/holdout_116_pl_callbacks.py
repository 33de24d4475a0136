# ruff: noqa
# Hold-out batch 116 (large-model training infrastructure). Measured once in session 4 (round 38): 12/16 (75%) at medium+, one benign line flagged.
"""Lightning callbacks shared by the 1B/7B pretraining configs.

ThroughputMonitor reports tokens/s and MFU; RngCheckpointer keeps RNG state in
the checkpoint so resumed runs reproduce dropout masks and data order.
"""
import time

import lightning.pytorch as pl
import torch


class ThroughputMonitor(pl.Callback):
    def __init__(self, tokens_per_batch, flops_per_token, peak_flops):
        self.tokens_per_batch = tokens_per_batch
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self._t0 = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        dt = time.perf_counter() - self._t0
        tps = self.tokens_per_batch * trainer.world_size / dt
        mfu = tps * self.flops_per_token / (self.peak_flops * trainer.world_size)
        if trainer.is_global_zero:  # ok: MLS306
            pl_module.log_dict({"perf/tokens_per_s": tps, "perf/mfu": mfu}, rank_zero_only=True)


class RngCheckpointer(pl.Callback):
    def __init__(self, seed):
        self.seed = seed
        self._cpu_state = None
        self._cuda_state = None

    def setup(self, trainer, pl_module, stage):
        pl.seed_everything(self.seed + trainer.global_rank, workers=True)  # ok: MLS301

    def on_train_start(self, trainer, pl_module):
        self._cpu_state = torch.get_rng_state()
        self._cuda_state = torch.cuda.get_rng_state_all()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step % trainer.log_every_n_steps == 0 and self._cuda_state is not None:
            torch.cuda.set_rng_state_all(self._cuda_state)  # ruleid: MLS301

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rng"] = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        state = checkpoint.get("rng")
        if state is not None:
            torch.set_rng_state(state["cpu"])  # ok: MLS301
            torch.cuda.set_rng_state_all(state["cuda"])
