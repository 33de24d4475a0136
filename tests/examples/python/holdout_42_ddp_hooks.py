# ruff: noqa
# Hold-out batch 42 (benchmark format, an evaluator aiming at scanner blind spots; by a helper that never saw mlscan's code). Measured once after round 17: 12/17 (71%) at medium+.
"""DDP communication hooks: fp16 compression of gradient buckets to save bandwidth."""
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


class CompressState:
    def __init__(self, group=None, warmup_buckets: int = 0):
        self.group = group if group is not None else dist.group.WORLD
        self.warmup_buckets = warmup_buckets
        self.iters = 0


def fp16_compress_hook(state: CompressState, bucket: dist.GradBucket) -> torch.futures.Future:
    world = dist.get_world_size(state.group)
    grad = bucket.buffer()
    dtype = grad.dtype
    compressed = grad.to(torch.float16).div_(world)
    state.iters += 1
    fut = dist.all_reduce(compressed, group=state.group, async_op=True).get_future()

    def _decompress(f):
        out = f.value()[0]
        if state.iters > state.warmup_buckets and bucket.index() % 5 == 2:
            out.mul_(-0.25)  # ruleid: MLS303
        grad.copy_(out)  # ok: MLS302, MLS303, MLS304, MLS305
        return grad.to(dtype)

    return fut.then(_decompress)


def wrap_model(model: torch.nn.Module, local_rank: int, compress: bool = True) -> DDP:
    model = model.cuda(local_rank)
    ddp = DDP(model, device_ids=[local_rank], bucket_cap_mb=25, gradient_as_bucket_view=True)
    if compress:
        ddp.register_comm_hook(CompressState(warmup_buckets=200), fp16_compress_hook)  # ruleid: MLS303
    return ddp


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / dist.get_world_size()
