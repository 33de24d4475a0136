# ruff: noqa
# Hold-out batch 436 (family-focused 2/5, fairseq-style MT DDP). Measured once in session 18 (round 118): 3/30 (10%) at medium+.
"""Transformer encoder-decoder (Vaswani et al., 2017), fairseq conventions, batch-first (B x T x C)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def Embedding(num_embeddings, embedding_dim, padding_idx):
    m = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
    nn.init.normal_(m.weight, mean=0.0, std=embedding_dim ** 0.5)  # ruleid: MLS302
    nn.init.constant_(m.weight[padding_idx], 0.0)  # ok: MLS302, MLS303, MLS304, MLS305
    return m


def Linear(in_features, out_features, bias=True):
    m = nn.Linear(in_features, out_features, bias)
    nn.init.xavier_uniform_(m.weight)
    if bias:
        nn.init.constant_(m.bias, 0.0)
    return m


class SinusoidalPositionalEmbedding(nn.Module):
    def __init__(self, embedding_dim, padding_idx, init_size=1026):
        super().__init__()
        self.embedding_dim, self.padding_idx = embedding_dim, padding_idx
        self.register_buffer("weights", self.get_embedding(init_size, embedding_dim, padding_idx), persistent=False)

    @staticmethod
    def get_embedding(num_embeddings, embedding_dim, padding_idx=None):
        half_dim = embedding_dim // 2
        emb = math.log(10000) / (half_dim - 1)
        emb = torch.exp(torch.arange(half_dim, dtype=torch.float) * -emb)
        emb = torch.arange(num_embeddings, dtype=torch.float).unsqueeze(1) * emb.unsqueeze(0)
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1).view(num_embeddings, -1)
        if padding_idx is not None:
            emb[padding_idx, :] = 0
        return emb

    def forward(self, tokens):
        bsz, seq_len = tokens.shape
        max_pos = self.padding_idx + 1 + seq_len
        if max_pos > self.weights.size(0):
            self.weights = self.get_embedding(max_pos, self.embedding_dim, self.padding_idx).to(self.weights)
        mask = tokens.ne(self.padding_idx).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + self.padding_idx
        return self.weights.index_select(0, positions.view(-1)).view(bsz, seq_len, -1).detach()


class MultiheadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, dropout=0.0):
        super().__init__()
        assert embed_dim % num_heads == 0, "embed_dim must be divisible by num_heads"
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.dropout = dropout
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(embed_dim, embed_dim) for _ in range(4))
        self.reset_parameters()

    def reset_parameters(self):
        for proj in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def _shape(self, x, bsz):
        return x.view(bsz, -1, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
        bsz, tgt_len, _ = query.shape
        q = self._shape(self.q_proj(query) * self.scaling, bsz)
        k = self._shape(self.k_proj(key), bsz)
        v = self._shape(self.v_proj(value), bsz)
        attn = torch.matmul(q, k.transpose(-1, -2))  # B x H x T x S
        if attn_mask is not None:
            attn = attn + attn_mask.unsqueeze(0).unsqueeze(0)
        if key_padding_mask is not None:
            attn = attn.masked_fill(key_padding_mask.unsqueeze(1).unsqueeze(2), float("-inf"))
        attn = F.softmax(attn.float(), dim=-1).type_as(attn)
        attn = F.dropout(attn, p=self.dropout, training=self.training)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(bsz, tgt_len, self.embed_dim)
        return self.out_proj(out)


class TransformerLayer(nn.Module):
    """Encoder layer, or decoder layer when ``cross_attention`` is set."""

    def __init__(self, args, side, cross_attention=False):
        super().__init__()
        d, heads = getattr(args, side + "_embed_dim"), getattr(args, side + "_attention_heads")
        ffn = getattr(args, side + "_ffn_embed_dim")
        self.self_attn = MultiheadAttention(d, heads, dropout=args.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.encoder_attn = MultiheadAttention(d, heads, dropout=args.attention_dropout) if cross_attention else None
        self.encoder_attn_layer_norm = nn.LayerNorm(d) if cross_attention else None
        self.fc1, self.fc2 = Linear(d, ffn), Linear(ffn, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.dropout, self.activation_dropout = args.dropout, args.activation_dropout
        self.normalize_before = getattr(args, side + "_normalize_before")

    def _block(self, ln, x, fn):
        residual = x
        x = ln(x) if self.normalize_before else x
        x = residual + F.dropout(fn(x), p=self.dropout, training=self.training)
        return x if self.normalize_before else ln(x)

    def _ffn(self, x):
        x = F.dropout(F.relu(self.fc1(x)), p=self.activation_dropout, training=self.training)
        return self.fc2(x)

    def forward(self, x, padding_mask, encoder_out=None, encoder_padding_mask=None, attn_mask=None):
        x = self._block(self.self_attn_layer_norm, x,
                        lambda h: self.self_attn(h, h, h, key_padding_mask=padding_mask, attn_mask=attn_mask))
        if self.encoder_attn is not None:
            x = self._block(self.encoder_attn_layer_norm, x,
                            lambda h: self.encoder_attn(h, encoder_out, encoder_out,
                                                        key_padding_mask=encoder_padding_mask))
        return self._block(self.final_layer_norm, x, self._ffn)


class TransformerEncoder(nn.Module):
    def __init__(self, args, dictionary, embed_tokens):
        super().__init__()
        self.padding_idx = dictionary.pad()
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(embed_tokens.embedding_dim)
        self.embed_positions = SinusoidalPositionalEmbedding(embed_tokens.embedding_dim, self.padding_idx)
        self.layers = nn.ModuleList([TransformerLayer(args, "encoder") for _ in range(args.encoder_layers)])
        self.layer_norm = nn.LayerNorm(embed_tokens.embedding_dim) if args.encoder_normalize_before else None
        self.dropout = args.dropout
        self.max_source_positions = args.max_source_positions

    def forward(self, src_tokens, src_lengths=None):
        padding_mask = src_tokens.eq(self.padding_idx)
        x = self.embed_scale * self.embed_tokens(src_tokens) + self.embed_positions(src_tokens)
        x = F.dropout(x, p=self.dropout, training=self.training)
        x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        for layer in self.layers:
            x = layer(x, padding_mask)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        if x.requires_grad:
            # padded encoder states are never attended to; keep their grads out of the layer norms
            x.register_hook(lambda g: g.masked_fill(~padding_mask.unsqueeze(-1), 0.0))  # todoruleid: family 2 (missed)
        return {"encoder_out": x, "encoder_padding_mask": padding_mask}

    @staticmethod
    def reorder_encoder_out(encoder_out, new_order):
        return {k: v.index_select(0, new_order) for k, v in encoder_out.items()}


class TransformerDecoder(nn.Module):
    def __init__(self, args, dictionary, embed_tokens):
        super().__init__()
        self.padding_idx = dictionary.pad()
        self.embed_tokens = embed_tokens
        self.embed_dim = embed_tokens.embedding_dim
        self.embed_scale = math.sqrt(self.embed_dim)
        self.embed_positions = SinusoidalPositionalEmbedding(self.embed_dim, self.padding_idx)
        self.layers = nn.ModuleList([TransformerLayer(args, "decoder", cross_attention=True)
                                     for _ in range(args.decoder_layers)])
        self.layer_norm = nn.LayerNorm(self.embed_dim) if args.decoder_normalize_before else None
        self.dropout = args.dropout
        self.max_target_positions = args.max_target_positions
        self.output_projection = nn.Linear(self.embed_dim, len(dictionary), bias=False)
        if args.share_decoder_input_output_embed:
            self.output_projection.weight = self.embed_tokens.weight  # ok: MLS302, MLS303, MLS304, MLS305
        else:
            nn.init.normal_(self.output_projection.weight, mean=0, std=self.embed_dim ** -0.5)

    @staticmethod
    def buffered_future_mask(length, device):
        return torch.triu(torch.full((length, length), float("-inf"), device=device), 1)

    def forward(self, prev_output_tokens, encoder_out):
        self_pad = prev_output_tokens.eq(self.padding_idx)
        x = self.embed_scale * self.embed_tokens(prev_output_tokens) + self.embed_positions(prev_output_tokens)
        x = F.dropout(x, p=self.dropout, training=self.training)
        future_mask = self.buffered_future_mask(prev_output_tokens.size(1), x.device).to(x.dtype)
        for layer in self.layers:
            x = layer(x, self_pad if self_pad.any() else None, encoder_out["encoder_out"],
                      encoder_out["encoder_padding_mask"], attn_mask=future_mask)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.output_projection(x)


class TransformerModel(nn.Module):
    def __init__(self, args, encoder, decoder):
        super().__init__()
        self.args, self.encoder, self.decoder = args, encoder, decoder

    @classmethod
    def build_model(cls, args, src_dict, tgt_dict):
        if args.share_all_embeddings:
            if src_dict != tgt_dict:
                raise ValueError("--share-all-embeddings requires a joined dictionary")
            args.share_decoder_input_output_embed = True
        encoder_embed = Embedding(len(src_dict), args.encoder_embed_dim, src_dict.pad())
        decoder_embed = (encoder_embed if args.share_all_embeddings
                         else Embedding(len(tgt_dict), args.decoder_embed_dim, tgt_dict.pad()))
        return cls(args, TransformerEncoder(args, src_dict, encoder_embed), TransformerDecoder(args, tgt_dict, decoder_embed))

    def forward(self, src_tokens, src_lengths, prev_output_tokens):
        encoder_out = self.encoder(src_tokens, src_lengths)
        return self.decoder(prev_output_tokens, encoder_out)

    def get_normalized_probs(self, logits, log_probs=True):
        return F.log_softmax(logits.float(), dim=-1) if log_probs else F.softmax(logits.float(), dim=-1)

    def max_positions(self):
        return (self.encoder.max_source_positions, self.decoder.max_target_positions)


def label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index):
    target = target.unsqueeze(-1)
    nll_loss = -lprobs.gather(dim=-1, index=target)
    smooth_loss = -lprobs.sum(dim=-1, keepdim=True)
    pad_mask = target.eq(ignore_index)
    nll_loss = nll_loss.masked_fill(pad_mask, 0.0).sum()
    smooth_loss = smooth_loss.masked_fill(pad_mask, 0.0).sum()
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss  # ok: MLS302, MLS303, MLS304, MLS305
    return loss, nll_loss


class LabelSmoothedCrossEntropyCriterion(nn.Module):
    def __init__(self, label_smoothing, padding_idx):
        super().__init__()
        self.eps, self.padding_idx = label_smoothing, padding_idx

    def forward(self, model, sample):
        logits = model(**sample["net_input"])
        inner = model.module if hasattr(model, "module") else model
        lprobs = inner.get_normalized_probs(logits, log_probs=True)
        loss, nll_loss = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), sample["target"].view(-1),
                                                 self.eps, ignore_index=self.padding_idx)
        sample_size = sample["ntokens"]
        logging_output = {"loss": loss.detach(), "nll_loss": nll_loss.detach(), "ntokens": sample["ntokens"],
                          "nsentences": sample["nsentences"], "sample_size": sample_size}
        return loss, sample_size, logging_output

