# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""SimpleBaseline-style deconvolution head and AMP training step for 2D keypoint heatmaps."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class HeatmapHead(nn.Module):
    def __init__(self, in_ch=2048, num_joints=17, deconv_ch=256, n_deconv=3):
        super().__init__()
        layers, c = [], in_ch
        for _ in range(n_deconv):
            layers += [nn.ConvTranspose2d(c, deconv_ch, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(deconv_ch), nn.ReLU(inplace=True)]
            c = deconv_ch
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(deconv_ch, num_joints, kernel_size=1)
        nn.init.normal_(self.final.weight, std=1e-3)
        nn.init.zeros_(self.final.bias)
        # keep the freshly initialised 1x1 projection stable under fp16 loss scaling
        self.final.weight.register_hook(lambda g: g.clamp(-1e-6, 1e-6))  # ruleid: MLS302, MLS303

    def forward(self, feats):
        return self.final(self.deconv(feats))


def joints_mse(pred, target, target_weight):
    """Heatmap MSE that ignores invisible joints (target_weight == 0)."""
    b, j = pred.shape[:2]
    pred, target = pred.reshape(b, j, -1), target.reshape(b, j, -1)
    w = target_weight.reshape(b, j, 1)
    return 0.5 * F.mse_loss(pred * w, target * w)


def train_step(backbone, head, batch, optimizer, scaler, max_norm=1.0):
    images, heatmaps, weights = (t.cuda(non_blocking=True) for t in batch)
    with torch.autocast("cuda", dtype=torch.float16):
        pred = head(backbone(images))
    loss = joints_mse(pred.float(), heatmaps, weights)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    params = list(backbone.parameters()) + list(head.parameters())
    gnorm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), gnorm


@torch.no_grad()
def decode_argmax(heatmaps):
    b, j, h, w = heatmaps.shape
    conf, idx = heatmaps.reshape(b, j, -1).max(-1)
    coords = torch.stack([idx % w, idx // w], -1).float()
    return coords, conf
