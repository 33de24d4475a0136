# ruff: noqa
# Hold-out batch 41 (benchmark format; by a helper that never saw mlscan's code). Measured once after round 17: 12/16 (75%) at medium+.
"""Fine-tune a pretrained ViT-B/16 on a folder dataset with an EMA copy of the weights."""
import copy

import timm
import torch
import torch.nn.functional as F
from torch.cuda.amp import GradScaler, autocast


class ModelEma:
    def __init__(self, model, decay=0.9998):
        self.module = copy.deepcopy(model).eval()
        self.decay = decay

    @torch.no_grad()
    def update(self, model):
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305


def build_model(num_classes):
    model = timm.create_model("vit_base_patch16_224", pretrained=True, num_classes=num_classes)
    torch.nn.init.zeros_(model.head.weight)  # ok: MLS302, MLS303, MLS304, MLS305
    torch.nn.init.zeros_(model.head.bias)
    # layer-wise decay for the last blocks keeps early features stable
    for blk in model.blocks[-4:]:
        for p in blk.parameters():
            p.register_hook(lambda g: g.neg() * 0.5)  # ruleid: MLS303
    return model


def train(model, loader, epochs=10, accum=4, device="cuda"):
    model.to(device)
    ema = ModelEma(model)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.05)
    scaler = GradScaler()
    step = 0
    for epoch in range(epochs):
        model.train()
        for i, (x, y) in enumerate(loader):
            x, y = x.to(device), y.to(device)
            with autocast():
                loss = F.cross_entropy(model(x), y, label_smoothing=0.1) / accum  # ok: MLS302, MLS303, MLS304, MLS305
            scaler.scale(loss).backward()
            if (i + 1) % accum == 0:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                scaler.step(opt)
                scaler.update()
                opt.zero_grad(set_to_none=True)
                ema.update(model)
                step += 1
        print(f"epoch {epoch} step {step} loss {loss.item() * accum:.4f}")
    torch.save({"model": model.state_dict(), "ema": ema.module.state_dict()}, "vit_ft.pt")
    return model, ema
