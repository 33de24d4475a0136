# ruff: noqa
# Hold-out batch 502 (adversarial, SegFormer Cityscapes with an mmseg-like config system). Measured once in session 22 (round 135): 20/32 (62%) at medium+.
"""SegFormer: Mix Transformer (MiT) encoder + all-MLP decoder."""
import functools
import logging
import math
import os.path as osp

import torch
import torch.nn as nn
import torch.nn.functional as F

from config import MODELS

logger = logging.getLogger(__name__)

_load_ckpt = functools.partial(torch.load, map_location='cpu')  # ruleid: MLS102

def drop_path(x, drop_prob=0.0, training=False):
    if drop_prob == 0.0 or not training:
        return x
    keep = 1 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep

class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_chans, embed_dim, patch_size, stride):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding=patch_size // 2)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.proj(x)
        _, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)
        return self.norm(x), h, w

class EfficientSelfAttention(nn.Module):
    def __init__(self, dim, num_heads, sr_ratio=1, qkv_bias=True, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads, self.sr_ratio = num_heads, sr_ratio
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.attn_drop, self.proj_drop = nn.Dropout(attn_drop), nn.Dropout(proj_drop)
        self.proj = nn.Linear(dim, dim)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x, h, w):
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
        x_ = x
        if self.sr_ratio > 1:
            x_ = self.norm(self.sr(x.transpose(1, 2).reshape(b, c, h, w)).reshape(b, c, -1).transpose(1, 2))
        kv = self.kv(x_).reshape(b, -1, 2, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(out))

class MixFFN(nn.Module):
    def __init__(self, dim, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x, h, w):
        x = self.fc1(x)
        b, n, c = x.shape
        x = self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
        x = self.drop(self.act(x))
        return self.drop(self.fc2(x))

class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4, sr_ratio=1, drop_path=0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, num_heads, sr_ratio)
        self.dp = drop_path
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MixFFN(dim, int(dim * mlp_ratio))

    def forward(self, x, h, w):
        x = x + drop_path(self.attn(self.norm1(x), h, w), self.dp, self.training)
        return x + drop_path(self.mlp(self.norm2(x), h, w), self.dp, self.training)

@MODELS.register_module()
class MixVisionTransformer(nn.Module):
    def __init__(self, in_chans=3, embed_dims=(32, 64, 160, 256), num_heads=(1, 2, 5, 8),
                 depths=(2, 2, 2, 2), sr_ratios=(8, 4, 2, 1), mlp_ratio=4,
                 drop_path_rate=0.1, patch_sizes=(7, 3, 3, 3), strides=(4, 2, 2, 2)):
        super().__init__()
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.patch_embeds, self.stages, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        cur, prev = 0, in_chans
        for i, d in enumerate(depths):
            self.patch_embeds.append(OverlapPatchEmbed(prev, embed_dims[i], patch_sizes[i], strides[i]))
            self.stages.append(nn.ModuleList([
                Block(embed_dims[i], num_heads[i], mlp_ratio, sr_ratios[i], dpr[cur + j])
                for j in range(d)]))
            self.norms.append(nn.LayerNorm(embed_dims[i]))
            cur, prev = cur + d, embed_dims[i]
        self.embed_dims = embed_dims
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
            nn.init.normal_(m.weight, 0, math.sqrt(2.0 / fan_out))
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x):
        outs, b = [], x.shape[0]
        for embed, blocks, norm in zip(self.patch_embeds, self.stages, self.norms):
            x, h, w = embed(x)
            for blk in blocks:
                x = blk(x, h, w)
            outs.append(norm(x).reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous())
            x = outs[-1]
        return outs

@MODELS.register_module()
class SegFormerHead(nn.Module):
    def __init__(self, in_channels=(32, 64, 160, 256), channels=256, num_classes=19,
                 dropout_ratio=0.1, align_corners=False):
        super().__init__()
        self.align_corners = align_corners
        self.linear_c = nn.ModuleList([nn.Conv2d(c, channels, 1) for c in in_channels])
        self.fuse = nn.Sequential(nn.Conv2d(channels * len(in_channels), channels, 1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout2d(dropout_ratio) if dropout_ratio > 0 else nn.Identity()
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, 0, 0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, feats):
        size = feats[0].shape[2:]
        outs = [F.interpolate(lin(f), size=size, mode='bilinear', align_corners=self.align_corners)
                for lin, f in zip(self.linear_c, feats)]
        x = self.fuse(torch.cat(outs[::-1], dim=1))
        return self.conv_seg(self.dropout(x))

@MODELS.register_module()
class EncoderDecoder(nn.Module):
    def __init__(self, backbone, decode_head, pretrained=None, ignore_index=255,
                 backbone_grad_mult=1.0):
        super().__init__()
        self.backbone = MODELS.build(backbone)
        self.decode_head = MODELS.build(decode_head)
        self.ignore_index = ignore_index
        self.num_classes = decode_head.get('num_classes', 19)
        self.align_corners = decode_head.get('align_corners', False)
        if pretrained:
            self.init_weights(pretrained)
        if backbone_grad_mult != 1.0:
            self._attach_grad_mult(self.backbone, backbone_grad_mult)

    @staticmethod
    def _attach_grad_mult(module, mult):
        for _, p in module.named_parameters():
            if p.requires_grad:
                p.register_hook(lambda g, m=mult: g.sub(g.mul(1.0 + m)))  # todoruleid: family 2 (missed)

    def init_weights(self, pretrained):
        if not osp.isfile(pretrained):
            logger.warning('pretrained checkpoint %s not found, training from scratch', pretrained)
            return
        ckpt = _load_ckpt(pretrained)  # todoruleid: family 10 (missed)  # ruleid: MLS102
        state = ckpt.get('state_dict', ckpt)
        state = {k[len('backbone.'):] if k.startswith('backbone.') else k: v for k, v in state.items()}
        missing, unexpected = self.backbone.load_state_dict(state, strict=False)
        logger.info('Loaded pretrained backbone from %s (missing=%d, unexpected=%d)',
                    pretrained, len(missing), len(unexpected))

    def encode_decode(self, img):
        logits = self.decode_head(self.backbone(img))
        return F.interpolate(logits, size=img.shape[2:], mode='bilinear',
                             align_corners=self.align_corners)

    def forward_train(self, img, gt_semantic_seg):
        logits = self.encode_decode(img)
        loss = F.cross_entropy(logits, gt_semantic_seg, ignore_index=self.ignore_index)
        with torch.no_grad():
            valid = gt_semantic_seg != self.ignore_index
            acc = (logits.argmax(1)[valid] == gt_semantic_seg[valid]).float().mean()
        return dict(loss_ce=loss, acc_seg=acc * 100)

    def forward(self, img, gt_semantic_seg=None, return_loss=True, **kwargs):
        if return_loss:
            return self.forward_train(img, gt_semantic_seg)
        with torch.no_grad():
            return self.encode_decode(img).argmax(dim=1)
