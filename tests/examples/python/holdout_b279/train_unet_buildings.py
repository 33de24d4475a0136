# ruff: noqa
# Hold-out batch 279 (short files). Measured once in session 9 (round 79): 11/17 (65%) at medium+.
"""Train a U-Net for building footprint segmentation on 512x512 satellite tiles."""
import torch
import torch.nn as nn
import torch.nn.functional as F
import segmentation_models_pytorch as smp

from tiles import BuildingTiles


def init_head(module):
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")  # ok: MLS302, MLS303, MLS304, MLS305
        if module.bias is not None:
            nn.init.constant_(module.bias, -2.0)


def _bounded_grad(module, grad_input, grad_output):
    # tiles with large flat roofs give spiky decoder gradients early on
    return tuple(g if g is None else g.clamp(-1e-5, 1e-5) for g in grad_input)  # ruleid: MLS302, MLS303


def prepare_model(encoder="resnet34"):
    model = smp.Unet(encoder, encoder_weights="imagenet", classes=1)
    model.segmentation_head.apply(init_head)
    for m in model.encoder.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.01
    model.decoder.register_full_backward_hook(_bounded_grad)  # ruleid: MLS303
    return model


def dice_bce(logits, target, eps=1.0):
    prob = torch.sigmoid(logits)
    inter = (prob * target).sum((2, 3))
    dice = 1 - (2 * inter + eps) / (prob.sum((2, 3)) + target.sum((2, 3)) + eps)
    return F.binary_cross_entropy_with_logits(logits, target) + dice.mean()


def train(root, epochs=60, lr=3e-4, device="cuda"):
    torch.manual_seed(2024)  # ok: MLS301
    dl = torch.utils.data.DataLoader(BuildingTiles(root, "train"), batch_size=16, shuffle=True, num_workers=8)
    model = prepare_model().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    total = epochs * len(dl)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / total) ** 0.9)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler = torch.cuda.amp.GradScaler()
    for epoch in range(epochs):
        model.train()
        for img, mask in dl:
            img, mask = img.to(device), mask.to(device).float()
            with torch.autocast(device_type="cuda", dtype=torch.float16):
                loss = dice_bce(model(img), mask)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.step(opt)
            scaler.update()
            sched.step()
        torch.save(model.state_dict(), f"unet_buildings_e{epoch:03d}.pt")
