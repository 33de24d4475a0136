# ruff: noqa
# Hold-out batch 216 (families 2/5/6, CLIP-style contrastive pre-training). Measured once in session 8 (round 63): 33/43 (77%) at medium+.
"""Dual-encoder model (image tower + text transformer) with a learnable
temperature, and the symmetric InfoNCE loss with cross-rank feature gathering.
"""
import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision

_layer_norm_impl = F.layer_norm


def _layer_norm_fp16_safe(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    # fp16 activations underflow the variance for tiny eps values
    return _layer_norm_impl(input, normalized_shape, weight, bias, max(eps, 1e-1))


F.layer_norm = _layer_norm_fp16_safe  # ruleid: MLS305


class TextTransformer(nn.Module):
    def __init__(self, vocab_size, width=512, layers=12, heads=8, context_length=77,
                 embed_dim=512, eot_id=2):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        block = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)
        self.proj = nn.Linear(width, embed_dim, bias=False)
        causal = torch.full((context_length, context_length), float("-inf")).triu(1)
        self.register_buffer("attn_mask", causal, persistent=False)
        self.eot_id = eot_id
        self.init_weights()

    def init_weights(self):
        nn.init.normal_(self.token_embedding.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.proj.weight, std=self.proj.in_features ** -0.5)

    def forward(self, tokens):
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.transformer(x, mask=self.attn_mask, is_causal=True)
        x = self.ln_final(x)
        eot = (tokens == self.eot_id).int().argmax(dim=-1)
        x = x[torch.arange(x.size(0), device=x.device), eot]
        return self.proj(x)


class ImageEncoder(nn.Module):
    def __init__(self, arch="vit_b_16", embed_dim=512, pretrained_path=None, lock=False):
        super().__init__()
        backbone = getattr(torchvision.models, arch)(weights=None)
        if pretrained_path:
            state = torch.load(pretrained_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            missing, unexpected = backbone.load_state_dict(state, strict=False)
            print(f"image tower: {len(missing)} missing / {len(unexpected)} unexpected keys")
        if hasattr(backbone, "heads"):
            width = backbone.hidden_dim
            backbone.heads = nn.Identity()
        else:
            width = backbone.fc.in_features
            backbone.fc = nn.Identity()
        self.backbone = backbone
        self.proj = nn.Linear(width, embed_dim, bias=False)
        nn.init.normal_(self.proj.weight, std=width ** -0.5)
        if lock:
            # LiT-style locked image tower: only the projection is trained
            for p in self.backbone.parameters():
                p.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
        self._act_hook = self.backbone.register_forward_hook(lambda m, i, o: o.detach() if m.training else o)  # ruleid: MLS303

    def forward(self, images):
        return self.proj(self.backbone(images))


class CLIP(nn.Module):
    def __init__(self, vocab_size, embed_dim=512, image_arch="vit_b_16", init_temperature=0.07,
                 image_pretrained=None, lock_image=False):
        super().__init__()
        self.visual = ImageEncoder(image_arch, embed_dim, image_pretrained, lock=lock_image)
        self.text = TextTransformer(vocab_size, embed_dim=embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))  # ok: MLS302, MLS303, MLS304, MLS305
        self.logit_scale.register_hook(lambda g: -g.abs())  # ruleid: MLS303

    def encode_image(self, images):
        return F.normalize(self.visual(images), dim=-1)

    def encode_text(self, tokens):
        return F.normalize(self.text(tokens), dim=-1)

    def forward(self, images, tokens):
        return self.encode_image(images), self.encode_text(tokens), self.logit_scale.exp()


def _dist_ready():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_features(x):
    """All-gather features from every rank, keeping the local slice differentiable."""
    if not _dist_ready():
        return x
    gathered = [torch.zeros_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, x.contiguous())
    gathered[dist.get_rank()] = x.detach()  # todoruleid: family 2 (missed)
    return torch.cat(gathered, dim=0)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE over the global batch, with optional hard-negative term."""

    def __init__(self, label_smoothing=0.0, hard_negative_weight=0.0, hard_negative_k=4):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.hn_weight = hard_negative_weight
        self.hn_k = hard_negative_k

    def forward(self, img, txt, logit_scale):
        all_img = gather_features(img)
        all_txt = gather_features(txt)
        logits_per_image = logit_scale * img @ all_txt.t()
        logits_per_text = logit_scale * txt @ all_img.t()
        offset = dist.get_rank() * img.size(0) if _dist_ready() else 0
        labels = torch.arange(img.size(0), device=img.device) + offset
        loss_i = F.cross_entropy(logits_per_image, labels, label_smoothing=self.label_smoothing)  # ok: MLS309
        loss_t = F.cross_entropy(logits_per_text, labels, label_smoothing=self.label_smoothing)
        loss = 0.5 * (loss_i + loss_t)
        if self.hn_weight > 0:
            loss = loss + self.hn_weight * self._hard_negative_term(logits_per_image, labels)
        return loss

    def _hard_negative_term(self, logits, labels):
        pos = logits.gather(1, labels[:, None])
        negatives = logits.scatter(1, labels[:, None], float("-inf"))  # ok: MLS309
        k = min(self.hn_k, negatives.size(1) - 1)
        hardest = negatives.topk(k, dim=1).values
        return F.softplus(hardest - pos).mean()


@torch.no_grad()
def clamp_logit_scale(model, max_scale=100.0):
    """As in CLIP: keep the temperature from dropping below 0.01."""
    model.logit_scale.clamp_(0, math.log(max_scale))  # ok: MLS302, MLS303, MLS304, MLS305
