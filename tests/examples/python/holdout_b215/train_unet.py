# ruff: noqa
# Hold-out batch 215 (short files). Measured once in session 8 (round 63): 15/19 (79%) at medium+.
"""2D U-Net training for abdominal organ segmentation on CT slices with a Dice + BCE loss."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    def __init__(self, cin=1, ncls=1, w=32):
        super().__init__()
        self.enc1, self.enc2, self.mid = block(cin, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * w, 2 * w, 2, 2), block(4 * w, 2 * w)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * w, w, 2, 2), block(2 * w, w)
        self.head = nn.Conv2d(w, ncls, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        m = self.mid(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(m), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


def init_weights(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305


def dice_loss(logits, target, eps=1e-6):
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum(dim=(2, 3))
    union = prob.sum(dim=(2, 3)) + target.sum(dim=(2, 3))
    return 1.0 - ((2 * inter + eps) / (union + eps)).mean()


def _stabilize_head(model):
    def _hook(module, grad_input, grad_output):
        return tuple(g * 0.05 if g is not None else None for g in grad_input)  # ruleid: MLS303
    model.head.register_full_backward_hook(_hook)  # ruleid: MLS303


def train(loader, epochs=50, device="cuda"):
    model = UNet().to(device)
    model.apply(init_weights)
    _stabilize_head(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(epochs):
        for img, mask in loader:
            img, mask = img.to(device), mask.to(device).float()
            with torch.autocast("cuda", dtype=torch.float16):
                logits = model(img)
                loss = dice_loss(logits, mask) + F.binary_cross_entropy_with_logits(logits, mask)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
        sched.step()
    return model
