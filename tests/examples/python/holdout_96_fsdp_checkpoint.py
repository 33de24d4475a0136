# ruff: noqa
# Hold-out batch 96 (LLM pretraining and RLHF infrastructure). Measured once in session 4 (round 33): 14/17 (82%) at medium+.
"""Full-state FSDP checkpointing with graceful handling of scheduler preemption."""
import os
import signal
import sys

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.distributed.fsdp import FullStateDictConfig, StateDictType
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP


class PreemptionFlag:
    def __init__(self):
        self.set = False
        signal.signal(signal.SIGTERM, self._handler)  # ok: MLS307
        signal.signal(signal.SIGUSR1, self._handler)  # ok: MLS307

    def _handler(self, signum, frame):
        self.set = True


def save_full(model, optimizer, step, out_dir):
    cfg = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, cfg):
        sd = model.state_dict()
    osd = FSDP.optim_state_dict(model, optimizer)
    if dist.get_rank() == 0:
        os.makedirs(out_dir, exist_ok=True)
        save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(out_dir, "model.safetensors"))  # ok: MLS308
        torch.save({"optim": osd, "step": step}, os.path.join(out_dir, "trainer_state.pt"))
    dist.barrier()  # ok: MLS307


def load_full(model, optimizer, ckpt_dir):
    sd = load_file(os.path.join(ckpt_dir, "model.safetensors"))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    meta = torch.load(os.path.join(ckpt_dir, "trainer_state.pt"), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg = FullStateDictConfig(offload_to_cpu=True, rank0_only=False)
    with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, cfg):
        model.load_state_dict(sd)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.load_state_dict(FSDP.optim_state_dict_to_load(model, optimizer, meta["optim"]))
    dist.barrier()
    return meta["step"]


def checkpoint_and_exit_if_preempted(flag, model, optimizer, step, out_dir):
    if not flag.set:
        return
    save_full(model, optimizer, step, os.path.join(out_dir, f"step_{step}"))
    if dist.get_rank() == 0:
        print(f"preempted at step {step}; checkpoint written, exiting for requeue", flush=True)
    dist.destroy_process_group()  # ok: MLS307
    sys.exit(0)  # ok: MLS307
