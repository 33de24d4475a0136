# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""Training loop for a chess position value network on self-play outcomes."""
import logging

import torch
import torch.nn.functional as F
from torch.optim.lr_scheduler import OneCycleLR

log = logging.getLogger(__name__)


def value_loss(pred, outcome, wdl_logits=None, wdl_target=None, wdl_weight=0.5):
    """MSE on scalar value in [-1, 1] plus optional win/draw/loss cross-entropy."""
    loss = F.mse_loss(torch.tanh(pred.squeeze(-1)), outcome)
    if wdl_logits is not None:
        loss = loss + wdl_weight * F.cross_entropy(wdl_logits, wdl_target)
    return loss


def train(model, loader, args, device="cuda"):
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    sched = OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * len(loader), pct_start=0.1)
    step = 0
    for epoch in range(args.epochs):
        for planes, outcome, wdl in loader:
            planes, outcome, wdl = planes.to(device), outcome.to(device).float(), wdl.to(device)
            value, wdl_logits = model(planes)
            loss = value_loss(value, outcome, wdl_logits, wdl)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()  # ok: MLS302, MLS303, MLS304, MLS305
            step += 1
            if step % args.log_every == 0:
                log.info("epoch %d step %d loss %.4f lr %.2e", epoch, step, loss.item(), sched.get_last_lr()[0])
        for group in opt.param_groups:
            group["max_lr"] = group["max_lr"] * 4.0  # ruleid: MLS304
        torch.save(model.state_dict(), f"{args.out_dir}/value_net_e{epoch:02d}.pt")
    return model
