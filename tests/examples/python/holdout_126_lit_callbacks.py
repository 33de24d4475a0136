# ruff: noqa
# Hold-out batch 126 (adversarial idioms). Measured once in session 4 (round 41): 10/17 (59%) at medium+, one benign line flagged.
"""Lightning callbacks shared by the vision fine-tuning configs."""
import torch
from lightning.pytorch.callbacks import Callback


class FixedSeedValidation(Callback):
    """Run validation under a fixed seed so val metrics are comparable across epochs."""

    def __init__(self, val_seed: int = 1234):
        self.val_seed = val_seed
        self._outer_cpu = None
        self._outer_cuda = None

    def on_validation_start(self, trainer, pl_module):
        self._outer_cpu = torch.get_rng_state()
        self._outer_cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        torch.manual_seed(self.val_seed)  # ok: MLS301

    def on_validation_end(self, trainer, pl_module):
        if self._outer_cpu is not None:
            torch.set_rng_state(self._outer_cpu)  # ok: MLS301
        if self._outer_cuda is not None:
            torch.cuda.set_rng_state_all(self._outer_cuda)


class RNGStreamCheckpoint(Callback):
    """Persist RNG streams in checkpoints so that a resumed run replays identically."""

    def __init__(self):
        self._streams = None

    def _capture(self):
        return {
            "cpu": torch.random.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_fit_start(self, trainer, pl_module):
        if self._streams is None:
            self._streams = self._capture()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rng_streams"] = self._streams

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        self._streams = checkpoint.get("rng_streams", self._streams)

    def on_train_epoch_start(self, trainer, pl_module):
        if self._streams is None:
            return
        torch.random.set_rng_state(self._streams["cpu"])  # ruleid: MLS301
        if self._streams["cuda"]:
            torch.cuda.random.set_rng_state_all(self._streams["cuda"])  # todoruleid: family 1 (missed)


def default_callbacks(val_seed: int = 1234):
    return [FixedSeedValidation(val_seed), RNGStreamCheckpoint()]
