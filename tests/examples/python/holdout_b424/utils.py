# ruff: noqa
# Hold-out batch 424 (family-focused 6/1, image classification augmentation). Measured once in session 17 (round 115): 13/30 (43%) at medium+.
"""Distributed helpers, seeding, RNG-state bookkeeping, GPU prefetching, meters and
checkpoint I/O."""
import glob
import logging
import os
import random
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

logger = logging.getLogger("cls")


# --------------------------------------------------------------------------- #
# Distributed
# --------------------------------------------------------------------------- #
def init_distributed() -> Dict[str, int]:
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank = int(os.environ["RANK"])
        world_size = int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        dist.init_process_group(backend="nccl", init_method="env://")
        dist.barrier()
    else:
        rank, world_size, local_rank = 0, 1, 0
    return {"rank": rank, "world_size": world_size, "local_rank": local_rank}


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return t
    rt = t.detach().clone()
    dist.all_reduce(rt, op=dist.ReduceOp.SUM)
    return rt / get_world_size()


def setup_logging(output_dir: str, rank: int) -> None:
    level = logging.INFO if rank == 0 else logging.WARNING
    handlers: List[logging.Handler] = [logging.StreamHandler()]
    if rank == 0:
        os.makedirs(output_dir, exist_ok=True)
        handlers.append(logging.FileHandler(os.path.join(output_dir, "train.log")))
    logging.basicConfig(level=level, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(message)s")


# --------------------------------------------------------------------------- #
# Seeding and RNG state
# --------------------------------------------------------------------------- #
def seed_everything(seed: int, rank: int = 0) -> None:
    s = seed + rank
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)  # ok: MLS301
    torch.cuda.manual_seed_all(s)


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2 ** 32  # ok: MLS301
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def capture_rng_state() -> Dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])  # ok: MLS301
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- #
# GPU prefetch + normalisation
# --------------------------------------------------------------------------- #
class CudaPrefetcher:
    """Overlaps H2D copies with compute and normalises uint8 batches on the GPU."""

    def __init__(self, loader, device: torch.device, mean: Sequence[float], std: Sequence[float],
                 channels_last: bool = False, erase=None):
        self.loader = loader
        self.device = device
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.channels_last = channels_last
        self.erase = erase
        self.stream = torch.cuda.Stream(device=device)
        self._gen_state = torch.cuda.get_rng_state(device)

    def __len__(self) -> int:
        return len(self.loader)

    @property
    def sampler(self):
        return self.loader.sampler

    def _to_device(self, images: torch.Tensor, targets: torch.Tensor):
        with torch.cuda.stream(self.stream):
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            images = images.float().sub_(self.mean).div_(self.std)
            if self.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            if self.erase is not None:
                # keep the default CUDA generator in step with the side stream
                torch.cuda.set_rng_state(self._gen_state, self.device)  # ruleid: MLS301
                images = self.erase(images)
        return images, targets

    def __iter__(self):
        first = True
        images = targets = None
        for next_images, next_targets in self.loader:
            next_images, next_targets = self._to_device(next_images, next_targets)
            if not first:
                yield images, targets
            else:
                first = False
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            images, targets = next_images, next_targets
            images.record_stream(torch.cuda.current_stream(self.device))
            targets.record_stream(torch.cuda.current_stream(self.device))
        if images is not None:
            yield images, targets


# --------------------------------------------------------------------------- #
# Meters
# --------------------------------------------------------------------------- #
class AverageMeter:
    def __init__(self, name: str = "", fmt: str = ":.4f"):
        self.name, self.fmt = name, fmt
        self.reset()

    def reset(self) -> None:
        self.val = self.avg = self.sum = 0.0
        self.count = 0

    def update(self, val: float, n: int = 1) -> None:
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / max(self.count, 1)


@torch.no_grad()
def accuracy(output: torch.Tensor, target: torch.Tensor, topk=(1,)) -> List[torch.Tensor]:
    maxk = min(max(topk), output.size(1))
    batch_size = target.size(0)
    _, pred = output.topk(maxk, 1, True, True)
    pred = pred.t()
    correct = pred.eq(target.reshape(1, -1).expand_as(pred))
    return [correct[:min(k, maxk)].reshape(-1).float().sum(0) * 100.0 / batch_size for k in topk]


# --------------------------------------------------------------------------- #
# Checkpoints
# --------------------------------------------------------------------------- #
def save_checkpoint(state: Dict, output_dir: str, epoch: int, is_best: bool,
                    keep_last: int = 3) -> None:
    if not is_main_process():
        return
    path = os.path.join(output_dir, f"checkpoint-{epoch:04d}.pth")
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)
    torch.save(state, os.path.join(output_dir, "last.pth"))
    if is_best:
        torch.save(state, os.path.join(output_dir, "model_best.pth"))
    ckpts = sorted(glob.glob(os.path.join(output_dir, "checkpoint-*.pth")))
    for old in ckpts[:-keep_last]:
        os.remove(old)


def load_checkpoint(path: str, map_location="cpu") -> Dict:
    return torch.load(path, map_location=map_location, weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def find_resume(output_dir: str) -> Optional[str]:
    return os.path.join(output_dir, "last.pth") if os.path.isfile(os.path.join(output_dir, "last.pth")) else None
