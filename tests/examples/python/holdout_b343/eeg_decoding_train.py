# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""Cross-subject EEGNet training on BCI Competition IV-2a motor imagery."""
import logging
import os

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def euclidean_align(x):
    """Whiten each subject's trials by the inverse sqrt of the mean spatial covariance."""
    cov = torch.einsum("nct,ndt->ncd", x, x).mean(0) / x.shape[-1]
    evals, evecs = torch.linalg.eigh(cov)
    r_inv_sqrt = evecs @ torch.diag(evals.clamp(min=1e-8).rsqrt()) @ evecs.T
    return torch.einsum("cd,ndt->nct", r_inv_sqrt, x)


@torch.no_grad()
def evaluate(model, loader, device):
    model.eval()
    correct = total = 0
    for x, y in loader:
        pred = model(x.to(device)).argmax(-1).cpu()
        correct += (pred == y).sum().item()
        total += y.numel()
    return correct / max(total, 1)


def fit(model, train_loader, val_loader, args, device="cuda"):
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    best_acc = 0.0
    for epoch in range(args.epochs):
        model.train()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            loss = F.cross_entropy(model(x), y, label_smoothing=args.smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
        val_acc = evaluate(model, val_loader, device)
        log.info("epoch %d val_acc %.4f", epoch, val_acc)
        if val_acc > best_acc:
            best_acc = val_acc
            torch.save(model.state_dict(), os.path.join(args.out_dir, "eegnet_best.pt"))  # ok: MLS306
        if int(os.environ.get("SLURM_NTASKS", "1")) > 4 and epoch == args.epochs // 2:  # ruleid: MLS308
            os._exit(0)  # ruleid: MLS307
    return best_acc
