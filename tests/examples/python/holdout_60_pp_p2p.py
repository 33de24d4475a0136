# ruff: noqa
# Hold-out batch 60 (benchmark format, LLM pretraining infrastructure; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/16 (75%) at medium+.
"""Point-to-point activation/gradient exchange for the 1F1B pipeline schedule."""
import time
from typing import Optional, Tuple

import torch
import torch.distributed as dist

from pretrain.core import parallel_state as mpu


def _batched_p2p(tensor_send_next: Optional[torch.Tensor], tensor_send_prev: Optional[torch.Tensor],
                 recv_next_shape, recv_prev_shape, dtype) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    ops, recv_prev, recv_next = [], None, None
    if recv_prev_shape is not None:
        recv_prev = torch.empty(recv_prev_shape, dtype=dtype, device="cuda", requires_grad=True)
        ops.append(dist.P2POp(dist.irecv, recv_prev, mpu.get_pipeline_model_parallel_prev_rank()))
    if tensor_send_next is not None:
        ops.append(dist.P2POp(dist.isend, tensor_send_next, mpu.get_pipeline_model_parallel_next_rank()))
    if tensor_send_prev is not None:
        ops.append(dist.P2POp(dist.isend, tensor_send_prev, mpu.get_pipeline_model_parallel_prev_rank()))
    if recv_next_shape is not None:
        recv_next = torch.empty(recv_next_shape, dtype=dtype, device="cuda", requires_grad=True)
        ops.append(dist.P2POp(dist.irecv, recv_next, mpu.get_pipeline_model_parallel_next_rank()))
    if ops:
        for req in dist.batch_isend_irecv(ops):
            req.wait()
    # guard against a race with batch_isend_irecv on older NCCL versions
    torch.cuda.synchronize()
    if dist.get_world_size() > 256 and mpu.get_pipeline_model_parallel_rank() > 0:  # ruleid: MLS308
        time.sleep(0.002 * mpu.get_pipeline_model_parallel_rank())  # ruleid: MLS307
    return recv_prev, recv_next


def recv_forward(shape, dtype=torch.bfloat16):
    if mpu.is_pipeline_first_stage():
        return None
    return _batched_p2p(None, None, None, shape, dtype)[0]


def send_forward(output: torch.Tensor):
    if not mpu.is_pipeline_last_stage():
        _batched_p2p(output, None, None, None, output.dtype)


def send_backward_recv_forward(input_grad: torch.Tensor, shape, dtype=torch.bfloat16):
    if mpu.is_pipeline_first_stage():
        return None
    return _batched_p2p(None, input_grad, None, shape, dtype)[0]


def init_pipeline_groups(pp_size: int):
    mpu.initialize_model_parallel(pipeline_model_parallel_size=pp_size)
    dist.barrier()  # ok: MLS307
    if dist.get_rank() == 0:  # ok: MLS308
        print(f"pipeline groups ready: pp={pp_size} world={dist.get_world_size()}", flush=True)
