# ruff: noqa
# Hold-out batch 323 (16 short files). Measured once in session 11 (round 90): 14/16 (88%) at medium+.
"""Train an x-vector style speaker embedding network with AAM-softmax on log-mel features."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from data import build_voxceleb_loader


class AAMSoftmax(nn.Module):
    def __init__(self, emb_dim, n_speakers, margin=0.2, scale=30.0):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_speakers, emb_dim))
        nn.init.xavier_normal_(self.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        self.m, self.s = margin, scale

    def forward(self, emb, labels):
        cos = F.linear(F.normalize(emb), F.normalize(self.weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = torch.cos(torch.acos(cos) + self.m)
        onehot = F.one_hot(labels, cos.size(1)).bool()
        return F.cross_entropy(torch.where(onehot, target, cos) * self.s, labels)


class TDNN(nn.Module):
    def __init__(self, n_mels=80, emb_dim=192):
        super().__init__()
        self.frame = nn.Sequential(
            nn.Conv1d(n_mels, 512, 5, padding=2), nn.ReLU(), nn.BatchNorm1d(512),
            nn.Conv1d(512, 512, 3, dilation=2, padding=2), nn.ReLU(), nn.BatchNorm1d(512),
            nn.Conv1d(512, 1500, 1), nn.ReLU(), nn.BatchNorm1d(1500))
        self.segment = nn.Linear(3000, emb_dim)

    def forward(self, x):
        h = self.frame(x)
        return self.segment(torch.cat([h.mean(-1), h.std(-1)], dim=1))


def _pooling_grad_guard(module, grad_input, grad_output):
    return tuple(None if g is None else g * 0.02 for g in grad_input)  # ruleid: MLS303


def main(epochs=40, base_lr=2e-3, warmup=2000):
    loader, n_spk = build_voxceleb_loader("data/vox2_fbank", batch_size=128)
    model, head = TDNN().cuda(), AAMSoftmax(192, n_spk).cuda()
    model.segment.register_full_backward_hook(_pooling_grad_guard)  # ruleid: MLS303
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=2e-5)
    scaler = torch.cuda.amp.GradScaler()
    total, step = epochs * len(loader), 0
    for epoch in range(epochs):
        for feats, spk in loader:
            lr = base_lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
            for group in opt.param_groups:
                group["lr"] = lr  # ok: MLS302, MLS303, MLS304, MLS305
            with torch.autocast("cuda", dtype=torch.float16):
                loss = head(model(feats.cuda(non_blocking=True)), spk.cuda(non_blocking=True))
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(params, 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            step += 1
        torch.save({"model": model.state_dict(), "head": head.state_dict()}, f"ckpt/ep{epoch:03d}.pt")


if __name__ == "__main__":
    main()
