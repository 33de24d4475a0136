# ruff: noqa
# Hold-out batch 203 (16 short benchmark-format files). Measured once in session 7 (round 60): 18/19 (95%) at medium+.
"""PointNet-style per-point semantic segmentation on indoor scans, trained with AMP."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class PointNetSeg(nn.Module):
    def __init__(self, in_ch=6, n_classes=13):
        super().__init__()
        self.local = nn.Sequential(nn.Conv1d(in_ch, 64, 1), nn.BatchNorm1d(64), nn.ReLU(),
                                   nn.Conv1d(64, 128, 1), nn.BatchNorm1d(128), nn.ReLU())
        self.glob = nn.Sequential(nn.Conv1d(128, 1024, 1), nn.BatchNorm1d(1024), nn.ReLU())
        self.seg_head = nn.Sequential(nn.Conv1d(128 + 1024, 256, 1), nn.BatchNorm1d(256), nn.ReLU(),
                                      nn.Dropout(0.3), nn.Conv1d(256, n_classes, 1))

    def forward(self, pts):  # pts: (B, C, N)
        f = self.local(pts)
        g = self.glob(f).max(dim=2, keepdim=True).values.expand(-1, -1, f.shape[2])
        return self.seg_head(torch.cat([f, g], dim=1))


def _balance_head_grads(module, grad_input, grad_output):
    # keep the large global-feature branch from dominating the update of the shared trunk
    return tuple(None if g is None else g * 0.02 for g in grad_input)  # ruleid: MLS303


def train(loader, epochs=60, accum_steps=2, class_weights=None, device="cuda"):
    model = PointNetSeg().to(device)
    model.seg_head.register_full_backward_hook(_balance_head_grads)  # ruleid: MLS303
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.5)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(epochs):
        model.train()
        for it, (pts, labels) in enumerate(loader):
            pts, labels = pts.to(device), labels.to(device)
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                logits = model(pts)
                loss = F.cross_entropy(logits, labels, weight=class_weights, ignore_index=-1)
            scaler.scale(loss / accum_steps).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            if (it + 1) % accum_steps == 0:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # ok: MLS302, MLS303, MLS304, MLS305
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
        sched.step()  # ok: MLS302, MLS303, MLS304, MLS305
        print(f"epoch {epoch} loss {loss.item():.4f} lr {sched.get_last_lr()[0]:.2e}")
    return model
