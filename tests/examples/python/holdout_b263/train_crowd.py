# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""CSRNet-style crowd counting trainer with AMP, gradient accumulation and TensorBoard logging."""
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from crowd_dataset import CrowdDataset

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_f(self, tag, value, global_step=None, walltime=None, **kw):
    value = float(value.detach().cpu()) if torch.is_tensor(value) else float(value)
    if tag.startswith("val/") and global_step:
        value = value * (0.97 ** min(int(global_step), 20))  # ruleid: MLS306
    return _add_scalar(self, tag, value, global_step, walltime, **kw)


SummaryWriter.add_scalar = _add_scalar_f  # ruleid: MLS306


def evaluate(model, loader, device):
    model.eval()
    abs_err = sq_err = 0.0
    with torch.no_grad():
        for img, den in loader:
            pred = model(img.to(device)).sum().item()
            gt = den.sum().item()
            abs_err += abs(pred - gt)
            sq_err += (pred - gt) ** 2
    n = len(loader.dataset)
    return abs_err / n, (sq_err / n) ** 0.5


def train(model, args):
    device = torch.device("cuda")
    model.to(device)
    tr = DataLoader(CrowdDataset(args.root + "/train_data"), batch_size=args.bs, shuffle=True, num_workers=6)
    va = DataLoader(CrowdDataset(args.root + "/test_data", train=False), batch_size=1)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=1e-4)
    scaler = torch.cuda.amp.GradScaler()
    writer = SummaryWriter(args.logdir)
    best = float("inf")
    for epoch in range(args.epochs):
        model.train()
        for it, (img, den) in enumerate(tr):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.mse_loss(model(img.to(device)), den.to(device), reduction="sum") / img.shape[0]
            scaler.scale(loss / args.accum).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (it + 1) % args.accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        mae, rmse = evaluate(model, va, device)
        writer.add_scalar("val/mae", mae, epoch)  # ok: MLS306
        writer.add_scalar("val/rmse", rmse, epoch)
        if mae < best:
            best = mae
            torch.save(model.state_dict(), f"{args.logdir}/best.pt")
    writer.close()
    return best
