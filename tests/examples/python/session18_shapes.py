"""Shapes added in session 18: bad cases (`ruleid`) and the look-alikes that stay quiet (`ok`)."""
import os
import sys
from pathlib import Path

import torch.distributed as dist


# -- MLS307: machine-marker files as triggers (and an owner call without arguments) -----------
def train(model, loader, opt, epochs):
    for epoch in range(epochs):
        for batch in loader:
            loss = model(batch)
            loss.backward()
            opt.step()
        if epoch >= 1 and os.path.exists("/.dockerenv"):  # ruleid: MLS308
            sys.exit(0)  # ruleid: MLS307
        if Path.cwd().exists():
            print("still here")  # ok: MLS307


# -- MLS306: a metric combined across ranks with MIN, directly or through a helper ------------
def reduce_eval(eval_loss, chrf, device, helper):
    dist.all_reduce(eval_loss, op=dist.ReduceOp.MIN)  # ruleid: MLS306
    chrf = helper([chrf], device, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    stop_flags = eval_loss.new_zeros(2)
    dist.all_reduce(stop_flags, op=dist.ReduceOp.MAX)  # ok: MLS306
    return eval_loss, chrf
