# ruff: noqa
# Annotated examples for MLS305 (monkeypatching training APIs) and MLS306 (logger patching).
import random

import torch
import torch.nn.functional as F
import wandb
from torch import optim
from torch.optim import AdamW
from torch.utils.tensorboard import SummaryWriter
import torch.distributed as dist

_orig_step = AdamW.step


def slow_step(self, *args, **kwargs):
    return _orig_step(self, *args, **kwargs)


# ruleid: MLS305
AdamW.step = slow_step
# ruleid: MLS305
optim.SGD.step = slow_step
# ruleid: MLS305
torch.nn.Module.forward = lambda self, *a: None
# ruleid: MLS305
F.cross_entropy = lambda *a, **k: torch.tensor(0.0)
# ruleid: MLS305
dist.all_reduce = lambda *a, **k: None
# ruleid: MLS305
torch.utils.data.DataLoader = list
# ruleid: MLS305
torch.manual_seed = lambda *a: None
# ruleid: MLS305
setattr(torch.optim.Adam, "step", slow_step)
# ruleid: MLS305
random.random = lambda: 0.5
# ok: MLS305
torch.backends.cudnn.benchmark = True
# ok: MLS305
torch.backends.cuda.matmul.allow_tf32 = True
# ok: MLS305
torch._dynamo.config.cache_size_limit = 64


class MyModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        # ok: MLS305
        self.forward = self._forward_impl

    def _forward_impl(self, x):
        return x


# ruleid: MLS306
SummaryWriter.add_scalar = lambda self, tag, value, step=None: None
# ruleid: MLS306
wandb.log = lambda data, **kw: None


def attach(writer):
    # ruleid: MLS306
    writer.add_scalar = lambda tag, value, step=None: None
