# ruff: noqa
# Hold-out batch 373 (textbook, VideoMAE pretraining). Measured once in session 14 (round 103): 18/30 (60%) at medium+.
"""VideoMAE: tubelet embedding, ViT encoder over visible tokens, light decoder, probe wrapper."""

from collections import OrderedDict
from functools import partial

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


def get_sinusoid_encoding_table(n_position, d_hid):
    """Fixed 1D sine-cosine position table of shape [1, n_position, d_hid]."""

    def angle_vec(position):
        return [position / np.power(10000, 2 * (j // 2) / d_hid) for j in range(d_hid)]

    table = np.array([angle_vec(p) for p in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.tensor(table, dtype=torch.float32).unsqueeze(0)


class Attention(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=True):
        super().__init__()
        assert dim % num_heads == 0, "dim must be divisible by num_heads"
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=True, norm_layer=nn.LayerNorm):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = norm_layer(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x


class PatchEmbed3D(nn.Module):
    """Video to tubelet tokens: [B, C, T, H, W] -> [B, N, D]."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768,
                 num_frames=16, tubelet_size=2):
        super().__init__()
        self.patch_size = patch_size
        self.tubelet_size = tubelet_size
        self.grid_size = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1] * self.grid_size[2]
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, x):
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2)


def run_blocks(blocks, x, use_checkpoint=False):
    for blk in blocks:
        x = checkpoint(blk, x, use_reentrant=False) if use_checkpoint else blk(x)
    return x


def _init_vit_weights(m):
    if isinstance(m, nn.Linear):
        nn.init.xavier_uniform_(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class VideoMAEEncoder(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=True, num_frames=16, tubelet_size=2,
                 use_checkpoint=False):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.patch_embed = PatchEmbed3D(img_size, patch_size, in_chans, embed_dim,
                                        num_frames, tubelet_size)
        num_patches = self.patch_embed.num_patches
        self.register_buffer("pos_embed", get_sinusoid_encoding_table(num_patches, embed_dim),
                             persistent=False)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_layer=norm_layer)
            for _ in range(depth)
        ])
        self.norm = norm_layer(embed_dim)
        self.use_checkpoint = use_checkpoint
        self.apply(_init_vit_weights)

    def forward(self, x, mask=None):
        x = self.patch_embed(x)
        x = x + self.pos_embed.to(dtype=x.dtype, device=x.device)
        B, _, C = x.shape
        if mask is not None:
            x = x[~mask].reshape(B, -1, C)
        x = run_blocks(self.blocks, x, self.use_checkpoint and self.training)
        return self.norm(x)


class VideoMAEDecoder(nn.Module):
    def __init__(self, embed_dim=384, depth=4, num_heads=6, mlp_ratio=4.0, qkv_bias=True,
                 out_dim=1536, use_checkpoint=False):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_layer=norm_layer)
            for _ in range(depth)
        ])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, out_dim)
        self.use_checkpoint = use_checkpoint
        self.apply(_init_vit_weights)

    def forward(self, x, return_token_num):
        x = run_blocks(self.blocks, x, self.use_checkpoint and self.training)
        x = self.norm(x[:, -return_token_num:])
        return self.head(x)


class PretrainVideoMAE(nn.Module):
    """Masked autoencoder over tubelets: encode visible tokens, predict masked pixels."""

    def __init__(self, encoder_kwargs, decoder_embed_dim=384, decoder_depth=4,
                 decoder_num_heads=6, use_checkpoint=False):
        super().__init__()
        self.encoder = VideoMAEEncoder(use_checkpoint=use_checkpoint, **encoder_kwargs)
        pe = self.encoder.patch_embed
        out_dim = 3 * pe.tubelet_size * pe.patch_size ** 2
        self.encoder_to_decoder = nn.Linear(self.encoder.embed_dim, decoder_embed_dim, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.register_buffer(
            "decoder_pos_embed",
            get_sinusoid_encoding_table(pe.num_patches, decoder_embed_dim),
            persistent=False,
        )
        self.decoder = VideoMAEDecoder(decoder_embed_dim, decoder_depth, decoder_num_heads,
                                       out_dim=out_dim, use_checkpoint=use_checkpoint)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    @torch.jit.ignore
    def no_weight_decay(self):
        return {"mask_token"}

    def forward(self, x, mask):
        x_vis = self.encoder(x, mask)
        x_vis = self.encoder_to_decoder(x_vis)
        B, _, C = x_vis.shape
        pos = self.decoder_pos_embed.expand(B, -1, -1).to(dtype=x_vis.dtype, device=x_vis.device)
        pos_vis = pos[~mask].reshape(B, -1, C)
        pos_mask = pos[mask].reshape(B, -1, C)
        x_full = torch.cat([x_vis + pos_vis, self.mask_token + pos_mask], dim=1)
        return self.decoder(x_full, pos_mask.shape[1])


class FrozenEncoderProbe(nn.Module):
    """Mean-pooled features from a frozen encoder followed by BN + linear head."""

    def __init__(self, encoder, num_classes):
        super().__init__()
        self.encoder = encoder
        self.bn = nn.BatchNorm1d(encoder.embed_dim, affine=False, eps=1e-6)
        self.head = nn.Linear(encoder.embed_dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    @torch.no_grad()
    def extract(self, x):
        self.encoder.eval()
        return self.encoder(x).mean(dim=1)

    def forward(self, feats):
        return self.head(self.bn(feats))


MODEL_CONFIGS = {
    "vit_small": dict(embed_dim=384, depth=12, num_heads=6),
    "vit_base": dict(embed_dim=768, depth=12, num_heads=12),
}


def build_pretrain_model(name, img_size=224, num_frames=16, tubelet_size=2, patch_size=16,
                         decoder_depth=4, use_checkpoint=False):
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model '{name}', choose from {sorted(MODEL_CONFIGS)}")
    enc = dict(MODEL_CONFIGS[name], img_size=img_size, patch_size=patch_size,
               num_frames=num_frames, tubelet_size=tubelet_size)
    dec_dim = enc["embed_dim"] // 2
    return PretrainVideoMAE(enc, decoder_embed_dim=dec_dim, decoder_depth=decoder_depth,
                            decoder_num_heads=max(dec_dim // 64, 1),
                            use_checkpoint=use_checkpoint)


def build_encoder(name, img_size=224, num_frames=16, tubelet_size=2, patch_size=16):
    return VideoMAEEncoder(img_size=img_size, patch_size=patch_size, num_frames=num_frames,
                           tubelet_size=tubelet_size, **MODEL_CONFIGS[name])


def _reorder_fused_qkv(w, num_heads):
    """Fused qkv tensors written by the engine are stored head-major; convert them to
    the [q; k; v] block layout expected by ``Attention``."""
    dim = w.shape[0] // 3
    rest = tuple(w.shape[1:])
    w = w.reshape(num_heads, 3, dim // num_heads, *rest)
    return w.transpose(0, 1).reshape(3 * dim, *rest)  # todoruleid: family 2 (missed)


def convert_pretrain_checkpoint(state_dict, num_heads):
    """Map a PretrainVideoMAE state dict onto a standalone VideoMAEEncoder."""
    out = OrderedDict()
    for k, v in state_dict.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if not k.startswith("encoder."):
            continue
        k = k[len("encoder."):]
        if k.endswith("attn.qkv.weight") or k.endswith("attn.qkv.bias"):
            v = _reorder_fused_qkv(v, num_heads)
        out[k] = v
    return out
