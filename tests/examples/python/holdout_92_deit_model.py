# ruff: noqa
# Hold-out batch 92 (benchmark format, vision model zoo; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 17/19 (89%) at medium+.
"""DeiT-style ViT with a distillation token (tiny / small / base configs)."""
import torch
import torch.nn as nn

CONFIGS = {
    "deit_tiny_distilled": dict(dim=192, depth=12, heads=3),
    "deit_small_distilled": dict(dim=384, depth=12, heads=6),
    "deit_base_distilled": dict(dim=768, depth=12, heads=12),
}


def _match_head_scale(module, inputs, output):
    # keep the distillation head on the same logit scale as the class head
    if module.training:
        return output.detach() * 0.5  # ruleid: MLS303
    return output


class DistilledViT(nn.Module):
    def __init__(self, img_size=224, patch=16, dim=384, depth=12, heads=6, num_classes=1000, drop_path=0.1):
        super().__init__()
        n_patches = (img_size // patch) ** 2
        self.patch_embed = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patches + 2, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        self.head_dist = nn.Linear(dim, num_classes)
        self._init_weights()
        self.head_dist.register_forward_hook(_match_head_scale)  # ruleid: MLS303

    def _init_weights(self):
        nn.init.trunc_normal_(self.pos_embed, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.dist_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, x):
        b = x.shape[0]
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(b, -1, -1), self.dist_token.expand(b, -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos_embed))
        x_cls, x_dist = self.head(x[:, 0]), self.head_dist(x[:, 1])
        if self.training:
            return x_cls, x_dist
        return (x_cls + x_dist) / 2


def create_model(name, **kwargs):
    cfg = dict(CONFIGS[name])
    cfg.update(kwargs)
    return DistilledViT(**cfg)
