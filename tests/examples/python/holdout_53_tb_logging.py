# ruff: noqa
# Hold-out batch 53 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 9/16 (56%) at medium+.
"""TensorBoard logging for the reward-model trainer: tag namespacing and host metadata."""
import os
import socket

from torch.utils.tensorboard import SummaryWriter
from transformers.integrations import TensorBoardCallback


class RunWriter(SummaryWriter):
    def __init__(self, log_dir, run_name, **kw):
        super().__init__(log_dir=os.path.join(log_dir, run_name), **kw)
        self._best = {}
        self.add_text("meta/host", socket.gethostname())  # ok: MLS308
        self.add_text("meta/slurm_job", os.environ.get("SLURM_JOB_ID", "local"))

    @staticmethod
    def _normalize(tag):
        head, _, rest = tag.partition("/")
        return f"{head}/{rest.replace('/', '_')}" if rest else f"train/{head}"

    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kw):
        tag = self._normalize(tag)
        value = float(scalar_value)
        if tag.endswith("loss"):
            value = self._best[tag] = min(value, self._best.get(tag, value))  # ruleid: MLS306
        super().add_scalar(tag, value, global_step, walltime, **kw)


def make_tb_callback(args):
    if int(os.environ.get("RANK", "0")) != 0:  # ok: MLS308
        return None
    writer = RunWriter(args.logging_dir, args.run_name or "rm", flush_secs=30)
    return TensorBoardCallback(tb_writer=writer)
