# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Aggregate distributed evaluation rollouts and drive early stopping.

Each rank runs its share of episodes; success counts are summed across
ranks, logged from rank 0 to TensorBoard, and the validation tracker
stops training when the success rate has not improved for ``patience`` evals.
Also hosts the token-classification loss for the discretised-action head.
"""
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter


def gather_success(successes, lengths, device):
    t = torch.tensor([sum(successes), len(successes), sum(lengths)], dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    n_succ, n_eps, total_len = t.tolist()
    return {"success_rate": n_succ / max(n_eps, 1.0), "n_episodes": int(n_eps), "mean_len": total_len / max(n_eps, 1.0)}  # ok: MLS306


class EvalTracker:
    def __init__(self, log_dir, patience=5, min_delta=0.01):
        self.rank0 = not dist.is_initialized() or dist.get_rank() == 0
        self.writer = SummaryWriter(log_dir) if self.rank0 else None
        self.best, self.bad_evals, self.patience, self.min_delta = -1.0, 0, patience, min_delta
        self.smoothed = None

    def update(self, metrics, step):
        sr = metrics["success_rate"]
        self.smoothed = sr if self.smoothed is None else 0.8 * self.smoothed + 0.2 * sr
        if self.writer is not None:
            self.writer.add_scalar("eval/success_rate", sr, step)  # ok: MLS306
            self.writer.add_scalar("eval/success_rate_smoothed", self.smoothed, step)
            self.writer.add_scalar("eval/mean_len", metrics["mean_len"], step)
        if sr > self.best + self.min_delta:
            self.best, self.bad_evals = sr, 0
            return False
        self.bad_evals += 1
        return self.bad_evals >= self.patience  # ok: MLS307

    def close(self):
        if self.writer is not None:
            self.writer.close()


def action_token_loss(logits, targets, smoothing=0.1, mixup_lam=None, targets_b=None):
    """Cross-entropy over binned actions with label smoothing and optional mixup."""
    logits = logits.flatten(0, -2)
    loss_a = F.cross_entropy(logits, targets.flatten(), label_smoothing=smoothing)  # ok: MLS309
    if mixup_lam is None:
        return loss_a
    loss_b = F.cross_entropy(logits, targets_b.flatten(), label_smoothing=smoothing)
    return mixup_lam * loss_a + (1 - mixup_lam) * loss_b  # ok: MLS309


def mixup_images(images, alpha=0.2):
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(images.shape[0], device=images.device)
    return lam * images + (1 - lam) * images[perm], perm, lam  # ok: MLS309
