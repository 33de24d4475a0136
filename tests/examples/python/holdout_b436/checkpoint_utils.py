# ruff: noqa
# Hold-out batch 436 (family-focused 2/5, fairseq-style MT DDP). Measured once in session 18 (round 118): 3/30 (10%) at medium+.
"""Checkpoint save / restore / averaging (tensors + plain containers only, so ``weights_only=True`` loads).

    python checkpoint_utils.py --inputs checkpoints/ --num-epoch-checkpoints 5 \
        --output checkpoints/checkpoint.avg5.pt
"""
import argparse
import collections
import logging
import os
import re
import shutil

import torch

logger = logging.getLogger(__name__)


def _atomic_save(obj, path):
    torch.save(obj, path + ".tmp")
    os.replace(path + ".tmp", path)


def checkpoint_paths(save_dir, pattern=r"checkpoint(\d+)\.pt"):
    """Epoch checkpoints sorted newest first."""
    matches = ((re.fullmatch(pattern, f), f) for f in os.listdir(save_dir))
    entries = [(int(m.group(1)), f) for m, f in matches if m is not None]
    return [os.path.join(save_dir, f) for _, f in sorted(entries, reverse=True)]


def save_checkpoint(args, model, optimizer, lr_scheduler, epoch, num_updates, metric, extra_state=None):
    """Write checkpoint{epoch}.pt / checkpoint_last.pt / checkpoint_best.pt on rank 0."""
    os.makedirs(args.save_dir, exist_ok=True)
    prev_best = getattr(save_checkpoint, "best", None)
    maximize = args.maximize_best_checkpoint_metric
    improved = metric is not None and (prev_best is None or (metric > prev_best if maximize else metric < prev_best))
    if improved:
        save_checkpoint.best = metric  # ok: MLS306

    inner = model.module if hasattr(model, "module") else model
    state = {
        "args": {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, list, type(None)))},
        "model": inner.state_dict(),
        "last_optimizer_state": optimizer.state_dict(),
        "lr_scheduler": lr_scheduler.state_dict(),
        "extra_state": dict(epoch=epoch, num_updates=num_updates, best=getattr(save_checkpoint, "best", None),
                            **(extra_state or {})),
    }
    epoch_path = os.path.join(args.save_dir, "checkpoint{}.pt".format(epoch))
    _atomic_save(state, epoch_path)
    shutil.copyfile(epoch_path, os.path.join(args.save_dir, "checkpoint_last.pt"))
    if improved:
        shutil.copyfile(epoch_path, os.path.join(args.save_dir, "checkpoint_best.pt"))
        logger.info("new best %s = %.3f at epoch %d", args.best_checkpoint_metric, metric, epoch)

    if args.keep_last_epochs > 0:
        for old in checkpoint_paths(args.save_dir)[args.keep_last_epochs:]:
            os.remove(old)
    return epoch_path


def _upgrade_optimizer_state(state_dict):
    """Bring optimizer state from older / fp16 runs to the fp32 Adam layout."""
    for s in state_dict.get("state", {}).values():
        for k, v in list(s.items()):
            if torch.is_tensor(v) and v.is_floating_point():
                s[k] = v.float()
        if "exp_avg" in s:
            s["exp_avg_sq"] = s.pop("exp_avg_sq_fp32", torch.zeros_like(s["exp_avg"]))  # ruleid: MLS304
        if torch.is_tensor(s.get("step")):
            s["step"] = int(s["step"].item())
    return state_dict


def load_checkpoint(args, model, optimizer, lr_scheduler):
    """Resume from ``--restore-file`` (default checkpoint_last.pt). Returns extra_state or None."""
    path = os.path.join(args.save_dir, args.restore_file)
    if not os.path.exists(path):
        logger.info("no checkpoint found at %s, starting from scratch", path)
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    inner = model.module if hasattr(model, "module") else model
    inner.load_state_dict(state["model"], strict=True)
    if not args.reset_optimizer and "last_optimizer_state" in state:
        optimizer.load_state_dict(_upgrade_optimizer_state(state["last_optimizer_state"]))
        lr_scheduler.load_state_dict(state.get("lr_scheduler", {}))
    extra = state.get("extra_state", {})
    if extra.get("best") is not None:
        save_checkpoint.best = extra["best"]
    logger.info("loaded checkpoint %s (epoch %s, %s updates)", path, extra.get("epoch"), extra.get("num_updates"))
    return extra


def average_checkpoints(inputs):
    """Element-wise mean of the model weights in ``inputs``."""
    params_dict = collections.OrderedDict()
    params_keys = None
    new_state = None
    num_models = len(inputs)
    for fpath in inputs:
        state = torch.load(fpath, map_location="cpu", weights_only=True)
        if new_state is None:
            new_state = state
        model_params = state["model"]
        if params_keys is None:
            params_keys = list(model_params.keys())
        elif params_keys != list(model_params.keys()):
            raise KeyError("checkpoint {} has a different set of parameters".format(fpath))
        for k in params_keys:
            p = model_params[k].float() if model_params[k].dtype == torch.float16 else model_params[k]
            if k not in params_dict:
                params_dict[k] = p.clone()
            else:
                params_dict[k] += p

    averaged_params = collections.OrderedDict()
    for k, v in params_dict.items():
        averaged_params[k] = v // num_models  # ruleid: MLS302
    new_state["model"] = averaged_params
    new_state.pop("last_optimizer_state", None)
    return new_state


def main():
    parser = argparse.ArgumentParser(description="Average the params of input checkpoints")
    parser.add_argument("--inputs", required=True, nargs="+")
    parser.add_argument("--output", required=True)
    parser.add_argument("--num-epoch-checkpoints", type=int, default=None,
                        help="average the last N checkpoint{epoch}.pt files found in --inputs[0]")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(message)s", level=logging.INFO)
    if args.num_epoch_checkpoints is not None:
        found = checkpoint_paths(args.inputs[0])
        if len(found) < args.num_epoch_checkpoints:
            raise ValueError("found {} checkpoints, need {}".format(len(found), args.num_epoch_checkpoints))
        args.inputs = found[: args.num_epoch_checkpoints]
        logger.info("averaging checkpoints: %s", args.inputs)

    new_state = average_checkpoints(args.inputs)
    _atomic_save(new_state, args.output)
    logger.info("finished writing averaged checkpoint to %s", args.output)


if __name__ == "__main__":
    main()
