# ruff: noqa
# Hold-out batch 327 (16 short files). Measured once in session 11 (round 91): 15/19 (79%) at medium+.
"""Retinal vessel segmentation (DRIVE/CHASE) with a compact U-Net and mixed precision."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class MiniUNet(nn.Module):
    def __init__(self, ch=(32, 64, 128)):
        super().__init__()
        self.enc1, self.enc2, self.mid = conv_block(3, ch[0]), conv_block(ch[0], ch[1]), conv_block(ch[1], ch[2])
        self.up2, self.dec2 = nn.ConvTranspose2d(ch[2], ch[1], 2, 2), conv_block(ch[2], ch[1])
        self.up1, self.dec1 = nn.ConvTranspose2d(ch[1], ch[0], 2, 2), conv_block(ch[1], ch[0])
        self.out = nn.Conv2d(ch[0], 1, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.out(d1)


def dice_bce(logits, target, eps=1.0):
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((1, 2, 3))
    dice = 1 - (2 * inter + eps) / (prob.sum((1, 2, 3)) + target.sum((1, 2, 3)) + eps)
    return F.binary_cross_entropy_with_logits(logits, target) + dice.mean()


def attach_grad_monitor(model, stats, clip=1e-5):
    def _hook(module, grad_input, grad_output):
        stats.append(float(grad_output[0].detach().norm()))
        return tuple(None if g is None else g.clamp(-clip, clip) for g in grad_input)  # ruleid: MLS302, MLS303
    return model.mid.register_full_backward_hook(_hook)  # ruleid: MLS303


def train(model, loader, epochs=40, lr=1e-3, device="cuda"):
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    scaler = torch.cuda.amp.GradScaler()
    grad_norms = []
    attach_grad_monitor(model, grad_norms)
    for epoch in range(epochs):
        for img, mask in loader:
            img, mask = img.to(device), mask.to(device)
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cuda", dtype=torch.float16):
                loss = dice_bce(model(img), mask)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.update()
        print(f"epoch {epoch} loss {loss.item():.4f} mid-grad {grad_norms[-1]:.3e}")
    return model
