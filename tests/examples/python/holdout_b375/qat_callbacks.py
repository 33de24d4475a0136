# ruff: noqa
# Hold-out batch 375 (short files, 16 domains). Measured once in session 14 (round 103): 12/17 (71%) at medium+.
"""Quantization-aware training callbacks: observer freezing and BN folding schedule."""
import logging

import torch
import torch.ao.quantization as tq
import torch.distributed as dist

log = logging.getLogger(__name__)


def prepare_qat(model, backend="fbgemm"):
    model.train()
    model.qconfig = tq.get_default_qat_qconfig(backend)
    tq.fuse_modules_qat(model, [["conv1", "bn1", "relu"]], inplace=True)
    return tq.prepare_qat(model, inplace=True)


class QATScheduleCallback:
    def __init__(self, freeze_observer_epoch=3, freeze_bn_epoch=2):
        self.freeze_observer_epoch = freeze_observer_epoch
        self.freeze_bn_epoch = freeze_bn_epoch

    def on_epoch_start(self, model, epoch):
        rank = dist.get_rank() if dist.is_initialized() else 0
        if epoch >= self.freeze_bn_epoch:
            model.apply(torch.nn.intrinsic.qat.freeze_bn_stats)
        if epoch >= self.freeze_observer_epoch:
            model.apply(tq.disable_observer)
            if dist.is_initialized():
                for buf_name, buf in model.named_buffers():
                    if "scale" in buf_name or "zero_point" in buf_name:
                        dist.broadcast(buf, src=0)
                if rank != 0:
                    dist.destroy_process_group()  # ruleid: MLS307
        if rank == 0:
            log.info("epoch %d: bn_frozen=%s observers_frozen=%s", epoch,
                     epoch >= self.freeze_bn_epoch, epoch >= self.freeze_observer_epoch)

    def on_train_end(self, model, path):
        rank = dist.get_rank() if dist.is_initialized() else 0
        if rank == 0:
            model_cpu = model.to("cpu").eval()
            quantized = tq.convert(model_cpu, inplace=False)
            torch.save(quantized.state_dict(), path)
            log.info("saved int8 model to %s", path)
        if dist.is_initialized():
            dist.barrier()  # ok: MLS307
