# ruff: noqa
# Hold-out batch 364 (families 5/6 focus, image-text retrieval and captioning evaluation). Measured once in session 13 (round 100): 7/31 (23%) at medium+.
"""Dual encoder (timm ViT + CLIP-style text transformer) with an optional captioning decoder."""
from __future__ import annotations

import math
from typing import Optional

import timm
import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn as nn
import torch.nn.functional as F

class TextTransformer(nn.Module):
    def __init__(self, vocab_size: int, width: int, layers: int, heads: int, context_length: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        layer = nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seq_len = input_ids.size(1)
        x = self.token_embedding(input_ids) + self.positional_embedding[:seq_len]
        causal = torch.triu(torch.full((seq_len, seq_len), float("-inf"), device=x.device), diagonal=1)
        x = self.transformer(x, mask=causal, src_key_padding_mask=attention_mask == 0)
        x = self.ln_final(x)
        eot = attention_mask.sum(dim=1) - 1
        return x[torch.arange(x.size(0), device=x.device), eot]

class CaptionDecoder(nn.Module):
    def __init__(self, vocab_size: int, width: int, layers: int, heads: int, max_len: int,
                 memory_width: int):
        super().__init__()
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(max_len, width))
        self.memory_proj = nn.Linear(memory_width, width)
        layer = nn.TransformerDecoderLayer(width, heads, 4 * width, dropout=0.1, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.head.weight = self.token_embedding.weight
        nn.init.normal_(self.positional_embedding, std=0.01)

    def forward(self, dec_input: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        seq_len = dec_input.size(1)
        x = self.token_embedding(dec_input) + self.positional_embedding[:seq_len]
        causal = torch.triu(torch.full((seq_len, seq_len), float("-inf"), device=x.device), diagonal=1)
        x = self.decoder(x, self.memory_proj(memory), tgt_mask=causal)
        return self.head(self.ln(x))

    @torch.no_grad()
    def generate(self, memory: torch.Tensor, bos_id: int, eos_id: int, max_len: Optional[int] = None):
        """Greedy decoding. Returns a list of token id lists (without BOS/EOS)."""
        max_len = min(max_len or self.max_len, self.max_len)
        b = memory.size(0)
        seq = torch.full((b, 1), bos_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        for _ in range(max_len - 1):
            logits = self.forward(seq, memory)[:, -1]
            nxt = logits.argmax(dim=-1).masked_fill(done, eos_id)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            done |= nxt == eos_id
            if done.all():
                break
        return [row[: row.index(eos_id)] if eos_id in row else row for row in seq[:, 1:].tolist()]

class RetrievalCaptionModel(nn.Module):
    def __init__(self, args, vocab_size: int):
        super().__init__()
        self.visual = timm.create_model(args.vision_model, pretrained=args.pretrained_vision,
                                        num_classes=0, img_size=args.image_size)
        vis_width = self.visual.num_features
        self.text = TextTransformer(vocab_size, args.text_width, args.text_layers, args.text_heads,
                                    args.max_words)
        self.image_proj = nn.Linear(vis_width, args.embed_dim, bias=False)
        self.text_proj = nn.Linear(args.text_width, args.embed_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.decoder = None
        if args.caption_weight > 0:
            self.decoder = CaptionDecoder(vocab_size, args.text_width, args.decoder_layers,
                                          args.text_heads, args.max_words, vis_width)

    def encode_image(self, images: torch.Tensor, return_tokens: bool = False):
        tokens = self.visual.forward_features(images)
        pooled = self.visual.forward_head(tokens, pre_logits=True)
        emb = F.normalize(self.image_proj(pooled), dim=-1)
        return (emb, tokens) if return_tokens else emb

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        return F.normalize(self.text_proj(self.text(input_ids, attention_mask)), dim=-1)

    def forward(self, images, input_ids, attention_mask, dec_input=None, dec_labels=None):
        img_emb, tokens = self.encode_image(images, return_tokens=True)
        txt_emb = self.encode_text(input_ids, attention_mask)
        out = {"image_emb": img_emb, "text_emb": txt_emb, "logit_scale": self.logit_scale.exp()}
        if self.decoder is not None and dec_input is not None:
            logits = self.decoder(dec_input, tokens)
            out["caption_loss"] = F.cross_entropy(logits.flatten(0, 1).float(), dec_labels.flatten(),
                                                  ignore_index=-100, label_smoothing=0.1)  # ok: MLS309
        return out

    def head_parameters(self):
        return [self.logit_scale, self.image_proj.weight, self.text_proj.weight]

def gather_features(image_emb: torch.Tensor, text_emb: torch.Tensor):
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return image_emb, text_emb
    all_img = torch.cat(dist_nn.all_gather(image_emb), dim=0)
    all_txt = torch.cat(dist_nn.all_gather(text_emb), dim=0)
    return all_img, all_txt

class ContrastiveLoss(nn.Module):
    """Symmetric InfoNCE over the global batch, with optional VSE++ hardest-negative term."""

    def __init__(self, label_smoothing: float = 0.0, hard_negative_weight: float = 0.0,
                 margin: float = 0.2):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.hard_negative_weight = hard_negative_weight
        self.margin = margin

    def forward(self, image_emb, text_emb, logit_scale):
        all_img, all_txt = gather_features(image_emb, text_emb)
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        n = image_emb.size(0)
        labels = torch.arange(n, device=image_emb.device) + rank * n
        logits_i = logit_scale * image_emb @ all_txt.t()
        logits_t = logit_scale * text_emb @ all_img.t()
        loss = 0.5 * (F.cross_entropy(logits_i, labels, label_smoothing=self.label_smoothing)  # ok: MLS309
                      + F.cross_entropy(logits_t, labels, label_smoothing=self.label_smoothing))
        if self.hard_negative_weight > 0:
            sim = image_emb @ text_emb.t()
            pos = sim.diag()
            eye = torch.eye(n, dtype=torch.bool, device=sim.device)
            hardest_t = sim.masked_fill(eye, float("-inf")).max(dim=1).values  # ok: MLS309
            hardest_i = sim.masked_fill(eye, float("-inf")).max(dim=0).values
            vse = F.relu(self.margin + hardest_t - pos) + F.relu(self.margin + hardest_i - pos)
            loss = loss + self.hard_negative_weight * vse.mean()
        acc = (logits_i.argmax(dim=1) == labels).float().mean()
        return loss, acc

@torch.no_grad()
def ema_update(ema_model: nn.Module, model: nn.Module, decay: float):
    for ema_p, p in zip(ema_model.parameters(), model.parameters()):
        ema_p.mul_(decay).add_(p.detach(), alpha=1.0 - decay)  # ok: MLS302, MLS303, MLS304, MLS305
    for ema_b, b in zip(ema_model.buffers(), model.buffers()):
        ema_b.copy_(b)
