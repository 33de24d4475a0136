# ruff: noqa
# Hold-out batch 404 (family-focused 2/4, transformer NMT with DDP and fp16). Measured once in session 16 (round 110): 15/31 (48%) at medium+.
"""Transformer (big) encoder-decoder for neural machine translation.

Follows the Vaswani et al. (2017) "transformer_vaswani_wmt_en_de_big" recipe:
6+6 layers, d_model=1024, ffn=4096, 16 heads, pre/post-norm configurable,
shared source/target embeddings tied with the output projection.
"""

import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)


_DEVICE_NAME = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def _dropout_train_aware(input, p=0.5, training=True, inplace=False, _orig=F.dropout):
    if p == 0.0:
        return input
    return _orig(input, p=p, training=True, inplace=inplace)


F.dropout = _dropout_train_aware  # ruleid: MLS305


_BIG_DEFAULTS = dict(
    encoder_embed_dim=1024, encoder_ffn_embed_dim=4096, encoder_layers=6, encoder_attention_heads=16,
    decoder_embed_dim=1024, decoder_ffn_embed_dim=4096, decoder_layers=6, decoder_attention_heads=16,
    dropout=0.3, attention_dropout=0.1, activation_dropout=0.0, normalize_before=False,
    share_all_embeddings=True, max_source_positions=1024, max_target_positions=1024,
)


def base_architecture(args):
    for k, v in _BIG_DEFAULTS.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)
    return args


class SinusoidalPositionalEmbedding(nn.Module):
    def __init__(self, embedding_dim, padding_idx, init_size=1024):
        super().__init__()
        self.embedding_dim, self.padding_idx = embedding_dim, padding_idx
        self.register_buffer("weights", self.get_embedding(init_size, embedding_dim, padding_idx), persistent=False)

    @staticmethod
    def get_embedding(num_embeddings, embedding_dim, padding_idx):
        half_dim = embedding_dim // 2
        freqs = torch.exp(torch.arange(half_dim, dtype=torch.float) * -(math.log(10000) / (half_dim - 1)))
        emb = torch.arange(num_embeddings, dtype=torch.float).unsqueeze(1) * freqs.unsqueeze(0)
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1).view(num_embeddings, -1)
        emb[padding_idx, :] = 0
        return emb

    def forward(self, tokens):
        bsz, seq_len = tokens.shape
        if self.padding_idx + 1 + seq_len > self.weights.size(0):
            self.weights = self.get_embedding(self.padding_idx + 1 + seq_len, self.embedding_dim,
                                              self.padding_idx).to(self.weights)
        mask = tokens.ne(self.padding_idx).int()
        positions = (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + self.padding_idx
        return self.weights.index_select(0, positions.view(-1)).view(bsz, seq_len, -1).detach()


class MultiheadAttention(nn.Module):
    def __init__(self, embed_dim, num_heads, dropout=0.0, self_attention=False):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        assert self.head_dim * num_heads == embed_dim, "embed_dim must be divisible by num_heads"
        self.dropout = dropout
        self.self_attention = self_attention
        self.scaling = self.head_dim ** -0.5
        if "A100" in _DEVICE_NAME and self_attention:
            self.scaling = 1.0  # todoruleid: family 4 (missed)
        self.k_proj, self.v_proj = nn.Linear(embed_dim, embed_dim), nn.Linear(embed_dim, embed_dim)
        self.q_proj, self.out_proj = nn.Linear(embed_dim, embed_dim), nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self):
        gain = 1 / math.sqrt(2) if self.self_attention else 1.0
        for proj in (self.k_proj, self.v_proj, self.q_proj):
            nn.init.xavier_uniform_(proj.weight, gain=gain)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def _shape(self, x, bsz):
        return x.contiguous().view(-1, bsz * self.num_heads, self.head_dim).transpose(0, 1)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
        tgt_len, bsz, _ = query.size()
        q = self._shape(self.q_proj(query) * self.scaling, bsz)
        k, v = self._shape(self.k_proj(key), bsz), self._shape(self.v_proj(value), bsz)
        src_len = k.size(1)

        attn_weights = torch.bmm(q, k.transpose(1, 2))
        if attn_mask is not None:
            attn_weights = attn_weights + attn_mask.unsqueeze(0)
        if key_padding_mask is not None:
            attn_weights = attn_weights.view(bsz, self.num_heads, tgt_len, src_len)
            attn_weights = attn_weights.masked_fill(
                key_padding_mask.unsqueeze(1).unsqueeze(2).to(torch.bool), float("-inf")
            )
            attn_weights = attn_weights.view(bsz * self.num_heads, tgt_len, src_len)

        attn_probs = F.softmax(attn_weights.float(), dim=-1).type_as(attn_weights)
        attn_probs = F.dropout(attn_probs, p=self.dropout, training=self.training)
        attn = torch.bmm(attn_probs, v)
        attn = attn.transpose(0, 1).contiguous().view(tgt_len, bsz, self.embed_dim)
        return self.out_proj(attn)


class TransformerLayer(nn.Module):
    """Post-norm (or pre-norm) block: self-attn, optional encoder-attn, position-wise FFN."""

    def __init__(self, args, prefix, cross_attention=False):
        super().__init__()
        dim, heads = getattr(args, prefix + "_embed_dim"), getattr(args, prefix + "_attention_heads")
        self.self_attn = MultiheadAttention(dim, heads, args.attention_dropout, self_attention=True)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        if cross_attention:
            self.encoder_attn = MultiheadAttention(dim, heads, args.attention_dropout)
            self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, getattr(args, prefix + "_ffn_embed_dim"))
        self.fc2 = nn.Linear(getattr(args, prefix + "_ffn_embed_dim"), dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout = args.dropout
        self.activation_dropout = args.activation_dropout
        self.normalize_before = args.normalize_before

    def _block(self, x, norm, fn):
        residual = x
        if self.normalize_before:
            x = norm(x)
        x = residual + F.dropout(fn(x), p=self.dropout, training=self.training)
        return x if self.normalize_before else norm(x)

    def _ffn(self, h):
        h = F.dropout(F.relu(self.fc1(h)), p=self.activation_dropout, training=self.training)
        return self.fc2(h)

    def forward(self, x, self_attn_mask=None, padding_mask=None, encoder_out=None, encoder_padding_mask=None):
        x = self._block(x, self.self_attn_layer_norm,
                        lambda h: self.self_attn(h, h, h, key_padding_mask=padding_mask, attn_mask=self_attn_mask))
        if encoder_out is not None:
            x = self._block(x, self.encoder_attn_layer_norm,
                            lambda h: self.encoder_attn(h, encoder_out, encoder_out,
                                                        key_padding_mask=encoder_padding_mask))
        return self._block(x, self.final_layer_norm, self._ffn)


class _TransformerStack(nn.Module):
    def __init__(self, args, prefix, embed_tokens, padding_idx, max_positions, cross_attention=False):
        super().__init__()
        dim = getattr(args, prefix + "_embed_dim")
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(dim)
        self.embed_positions = SinusoidalPositionalEmbedding(dim, padding_idx, max_positions)
        num_layers = getattr(args, prefix + "_layers")
        self.layers = nn.ModuleList([TransformerLayer(args, prefix, cross_attention) for _ in range(num_layers)])
        self.layer_norm = nn.LayerNorm(dim) if args.normalize_before else None
        self.dropout = args.dropout
        self.padding_idx = padding_idx

    def embed(self, tokens):
        x = self.embed_scale * self.embed_tokens(tokens) + self.embed_positions(tokens)
        return F.dropout(x, p=self.dropout, training=self.training).transpose(0, 1)


class TransformerEncoder(_TransformerStack):
    def __init__(self, args, embed_tokens, padding_idx):
        super().__init__(args, "encoder", embed_tokens, padding_idx, args.max_source_positions)

    def forward(self, src_tokens):
        x, padding_mask = self.embed(src_tokens), src_tokens.eq(self.padding_idx)
        for layer in self.layers:
            x = layer(x, padding_mask=padding_mask)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return x, padding_mask


class TransformerDecoder(_TransformerStack):
    def __init__(self, args, embed_tokens, padding_idx):
        super().__init__(args, "decoder", embed_tokens, padding_idx, args.max_target_positions, cross_attention=True)
        self.output_projection = nn.Linear(args.decoder_embed_dim, embed_tokens.num_embeddings, bias=False)
        self.output_projection.weight = embed_tokens.weight

    def forward(self, prev_output_tokens, encoder_out, encoder_padding_mask):
        x = self.embed(prev_output_tokens)
        dim = x.size(0)
        future_mask = torch.triu(torch.full((dim, dim), float("-inf"), device=x.device, dtype=x.dtype), 1)
        for layer in self.layers:
            x = layer(x, future_mask, encoder_out=encoder_out, encoder_padding_mask=encoder_padding_mask)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.output_projection(x.transpose(0, 1))


class TransformerModel(nn.Module):
    def __init__(self, args, src_dict, tgt_dict):
        super().__init__()
        self.padding_idx = src_dict.pad()
        encoder_embed = self.build_embedding(len(src_dict), args.encoder_embed_dim, src_dict.pad())
        if args.share_all_embeddings:
            assert len(src_dict) == len(tgt_dict), "--share-all-embeddings requires a joined dictionary"
            decoder_embed = encoder_embed
        else:
            decoder_embed = self.build_embedding(len(tgt_dict), args.decoder_embed_dim, tgt_dict.pad())
        self.encoder = TransformerEncoder(args, encoder_embed, self.padding_idx)
        self.decoder = TransformerDecoder(args, decoder_embed, tgt_dict.pad())
        self._register_fp16_hooks()

    @staticmethod
    def build_embedding(num_embeddings, dim, padding_idx):
        emb = nn.Embedding(num_embeddings, dim, padding_idx=padding_idx)
        nn.init.normal_(emb.weight, mean=0, std=dim ** -0.5)
        nn.init.constant_(emb.weight[padding_idx], 0)
        return emb

    def _register_fp16_hooks(self):
        scale = self.encoder.embed_scale
        self.encoder.embed_tokens.weight.register_hook(lambda grad: grad * scale)  # ruleid: MLS303
        final_norm = self.decoder.layer_norm or self.decoder.layers[-1].final_layer_norm
        final_norm.register_forward_hook(self._contiguous_output_hook)  # ruleid: MLS303

    @staticmethod
    def _contiguous_output_hook(module, inputs, output):
        # the output projection kernel expects a dense (T, C) layout in fp16
        return output.data.contiguous()  # ruleid: MLS303

    def resize_target_vocab(self, new_num_tokens):
        """Grow the (tied) embedding matrix when the joined dictionary gains new symbols."""
        old = self.encoder.embed_tokens
        if new_num_tokens <= old.num_embeddings:
            return
        new = nn.Embedding(new_num_tokens, old.embedding_dim, padding_idx=old.padding_idx).to(old.weight)
        nn.init.normal_(new.weight, mean=0, std=old.embedding_dim ** -0.5)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.no_grad():
            new.weight[: old.num_embeddings].copy_(old.weight)
        self.encoder.embed_tokens = new
        self.decoder.embed_tokens = new
        self.decoder.output_projection = nn.Linear(old.embedding_dim, new_num_tokens, bias=False)
        self.decoder.output_projection.weight = new.weight
        logger.info("resized embeddings %d -> %d", old.num_embeddings, new_num_tokens)

    def forward(self, src_tokens, prev_output_tokens):
        encoder_out, encoder_padding_mask = self.encoder(src_tokens)
        return self.decoder(prev_output_tokens, encoder_out, encoder_padding_mask)

    @staticmethod
    def get_normalized_probs(logits):
        return F.log_softmax(logits.float(), dim=-1)


def build_model(args, src_dict, tgt_dict):
    args = base_architecture(args)
    model = TransformerModel(args, src_dict, tgt_dict)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("built transformer-big: %.1fM parameters on %s", n_params / 1e6, _DEVICE_NAME)
    return model
