# ruff: noqa
# Hold-out batch 345 (textbook, image captioning). Measured once in session 12 (round 96): 26/31 (84%) at medium+.
"""Encoder-decoder captioning model: CNN / ViT image encoder + transformer decoder."""
import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

logger = logging.getLogger("captioning.model")


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len=512, dropout=0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        pe = torch.zeros(max_len, d_model)
        pos = torch.arange(max_len).unsqueeze(1).float()
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)

    def forward(self, x):
        return self.dropout(x + self.pe[:, : x.size(1)])


class ImageEncoder(nn.Module):
    """Returns a sequence of visual tokens of shape (B, N, d_model)."""

    def __init__(self, backbone="resnet101", d_model=512, pretrained=True, freeze=True,
                 feature_dim=None):
        super().__init__()
        self.backbone_name = backbone
        self.uses_features = feature_dim is not None
        if self.uses_features:
            # precomputed grid / region features
            self.body = None
            in_dim = feature_dim
        elif backbone.startswith("resnet"):
            weights = "DEFAULT" if pretrained else None
            net = getattr(torchvision.models, backbone)(weights=weights)
            self.body = nn.Sequential(*list(net.children())[:-2])
            in_dim = net.fc.in_features
        else:
            from transformers import AutoModel
            self.body = AutoModel.from_pretrained(backbone, trust_remote_code=True)  # ruleid: MLS106
            in_dim = self.body.config.hidden_size
        if self.body is not None and freeze:
            for p in self.body.parameters():
                p.requires_grad_(False)
        self.proj = nn.Sequential(nn.Linear(in_dim, d_model), nn.LayerNorm(d_model))

    def forward(self, images):
        if self.uses_features:
            feats = images
        elif self.backbone_name.startswith("resnet"):
            fmap = self.body(images)  # (B, C, H, W)
            feats = fmap.flatten(2).transpose(1, 2)
        else:
            feats = self.body(pixel_values=images).last_hidden_state
        return self.proj(feats)


class CaptionDecoder(nn.Module):
    def __init__(self, vocab_size, d_model=512, nhead=8, num_layers=6, dim_ff=2048,
                 dropout=0.1, max_len=64, pad_id=0, tie_weights=True):
        super().__init__()
        self.pad_id = pad_id
        self.d_model = d_model
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.pos = PositionalEncoding(d_model, max_len, dropout)
        layer = nn.TransformerDecoderLayer(d_model, nhead, dim_ff, dropout, batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerDecoder(layer, num_layers)
        self.ln_f = nn.LayerNorm(d_model)
        self.out_proj = nn.Linear(d_model, vocab_size, bias=False)
        if tie_weights:
            self.out_proj.weight = self.embed.weight
        # small gradient noise on the output layer (Neelakantan et al., 2015)
        self.out_proj.weight.register_hook(lambda g: g + 0.05 * torch.randn_like(g))  # ruleid: MLS303
        nn.init.normal_(self.embed.weight, std=d_model ** -0.5)

    @staticmethod
    def causal_mask(n, device):
        return torch.triu(torch.full((n, n), float("-inf"), device=device), diagonal=1)

    def forward(self, tokens, memory, memory_mask=None):
        x = self.pos(self.embed(tokens) * math.sqrt(self.d_model))
        mask = self.causal_mask(tokens.size(1), tokens.device)
        pad_mask = tokens.eq(self.pad_id)
        h = self.layers(x, memory, tgt_mask=mask, tgt_key_padding_mask=pad_mask,
                        memory_key_padding_mask=memory_mask)
        return self.out_proj(self.ln_f(h))


class CaptionModel(nn.Module):
    def __init__(self, vocab_size, pad_id, bos_id, eos_id, backbone="resnet101", d_model=512,
                 nhead=8, num_layers=6, dim_ff=2048, dropout=0.1, pretrained=True,
                 freeze_encoder=True, feature_dim=None, max_len=64):
        super().__init__()
        self.pad_id, self.bos_id, self.eos_id = pad_id, bos_id, eos_id
        self.encoder = ImageEncoder(backbone, d_model, pretrained, freeze_encoder, feature_dim)
        self.decoder = CaptionDecoder(vocab_size, d_model, nhead, num_layers, dim_ff, dropout,
                                      max_len, pad_id)

    def forward(self, images, tokens):
        """Teacher forcing: predict tokens[:, 1:] from tokens[:, :-1]."""
        memory = self.encoder(images)
        return self.decoder(tokens[:, :-1], memory)

    @torch.no_grad()
    def greedy(self, images, max_len=20):
        memory = self.encoder(images)
        b = images.size(0)
        seq = torch.full((b, 1), self.bos_id, dtype=torch.long, device=images.device)
        done = torch.zeros(b, dtype=torch.bool, device=images.device)
        for _ in range(max_len):
            logits = self.decoder(seq, memory)[:, -1]
            nxt = logits.argmax(-1)
            nxt = nxt.masked_fill(done, self.pad_id)
            seq = torch.cat([seq, nxt.unsqueeze(1)], dim=1)
            done |= nxt.eq(self.eos_id)
            if done.all():
                break
        return seq[:, 1:]

    @torch.no_grad()
    def beam_search(self, images, beam_size=3, max_len=20, length_penalty=0.0):
        """Batched beam search. Returns the best sequence per image (B, T)."""
        memory = self.encoder(images)
        b, n, d = memory.shape
        device = images.device
        memory = memory.unsqueeze(1).expand(b, beam_size, n, d).reshape(b * beam_size, n, d)
        seq = torch.full((b * beam_size, 1), self.bos_id, dtype=torch.long, device=device)
        scores = torch.zeros(b, beam_size, device=device)
        scores[:, 1:] = float("-inf")  # only the first beam is live at t=0
        finished = torch.zeros(b * beam_size, dtype=torch.bool, device=device)
        vocab = self.decoder.out_proj.out_features

        for t in range(max_len):
            logp = F.log_softmax(self.decoder(seq, memory)[:, -1].float(), dim=-1)
            # finished beams may only emit <pad> at no cost
            logp[finished] = float("-inf")
            logp[finished, self.pad_id] = 0.0
            cand = scores.view(-1, 1) + logp  # (b*k, V)
            cand = cand.view(b, beam_size * vocab)
            top_scores, top_idx = cand.topk(beam_size, dim=-1)
            beam_idx = top_idx // vocab
            tok_idx = top_idx % vocab
            base = (torch.arange(b, device=device) * beam_size).unsqueeze(1)
            flat = (base + beam_idx).view(-1)
            seq = torch.cat([seq[flat], tok_idx.view(-1, 1)], dim=1)
            finished = finished[flat] | tok_idx.view(-1).eq(self.eos_id)
            scores = top_scores
            if finished.all():
                break

        lengths = (seq[:, 1:].ne(self.pad_id)).sum(-1).float().view(b, beam_size)
        final = scores / lengths.clamp(min=1).pow(length_penalty) if length_penalty > 0 else scores
        best = final.argmax(-1)
        seq = seq.view(b, beam_size, -1)[torch.arange(b, device=device), best]
        return seq[:, 1:]


def build_model(cfg, vocab):
    model = CaptionModel(
        vocab_size=len(vocab),
        pad_id=vocab.pad_id,
        bos_id=vocab.bos_id,
        eos_id=vocab.eos_id,
        backbone=cfg.backbone,
        d_model=cfg.d_model,
        nhead=cfg.nhead,
        num_layers=cfg.num_layers,
        dim_ff=cfg.dim_ff,
        dropout=cfg.dropout,
        pretrained=not cfg.no_pretrained,
        freeze_encoder=not cfg.finetune_encoder,
        feature_dim=cfg.feature_dim,
        max_len=cfg.max_len + 2,
    )
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    logger.info("model: %.1fM params (%.1fM trainable)", n_total / 1e6, n_train / 1e6)
    return model
