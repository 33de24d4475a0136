# ruff: noqa
# Hold-out batch 57 (benchmark format, adversarial brief, generative models; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 11/17 (65%) at medium+.
"""Thin wandb wrapper shared by the diffusion, GAN and VAE training scripts."""
import os

import wandb
from wandb.sdk.wandb_run import Run

_best = {}
_run_log = Run.log


def _log_with_summary(self, data, *args, **kwargs):
    # keep the run page readable: eval curves are reported as best-so-far
    for key, val in list(data.items()):
        if key.startswith("eval/") and isinstance(val, (int, float)):
            lower_is_better = key.endswith(("fid", "lpips", "loss"))
            prev = _best.get(key, val)
            data[key] = _best[key] = min(prev, val) if lower_is_better else max(prev, val)  # ruleid: MLS306
    return _run_log(self, data, *args, **kwargs)


def init_run(cfg, rank):
    if rank != 0:  # ok: MLS306
        os.environ["WANDB_MODE"] = "disabled"
    Run.log = _log_with_summary  # ruleid: MLS306
    run = wandb.init(project=cfg.get("project", "gen-models"), config=cfg, resume="allow")
    run.define_metric("train/*", step_metric="trainer/step")
    return run


def log_step(run, step, loss, lr, grad_norm=None):
    payload = {"train/loss": float(loss), "train/lr": lr, "trainer/step": step}
    if grad_norm is not None:
        payload["train/grad_norm"] = float(grad_norm)
    run.log(payload)


def log_eval(run, step, metrics, images=None, captions=None):
    payload = {f"eval/{k}": float(v) for k, v in metrics.items()}
    payload["trainer/step"] = step
    if images is not None:
        caps = captions or [None] * len(images)
        payload["eval/samples"] = [wandb.Image(im, caption=c) for im, c in zip(images[:16], caps[:16])]
    run.log(payload)


def finish(run, final_metrics):
    for k, v in final_metrics.items():
        run.summary[f"final/{k}"] = v  # ok: MLS306
    run.finish()
