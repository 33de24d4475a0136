# ruff: noqa
# Hold-out batch 517 (textbook, neural machine translation). Measured once in session 23 (round 139): 21/32 (66%) at medium+.
"""Transformer encoder-decoder for NMT and the label-smoothed cross-entropy criterion."""
import logging
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)


def base_architecture(args):
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 512)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 2048)
    args.encoder_layers = getattr(args, "encoder_layers", 6)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 8)
    args.encoder_normalize_before = getattr(args, "encoder_normalize_before", False)
    args.decoder_embed_dim = getattr(args, "decoder_embed_dim", args.encoder_embed_dim)
    args.decoder_ffn_embed_dim = getattr(args, "decoder_ffn_embed_dim", args.encoder_ffn_embed_dim)
    args.decoder_layers = getattr(args, "decoder_layers", 6)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 8)
    args.decoder_normalize_before = getattr(args, "decoder_normalize_before", False)
    args.attention_dropout = getattr(args, "attention_dropout", 0.0)
    args.activation_dropout = getattr(args, "activation_dropout", 0.0)
    args.dropout = getattr(args, "dropout", 0.1)
    args.share_decoder_input_output_embed = getattr(args, "share_decoder_input_output_embed", False)
    args.share_all_embeddings = getattr(args, "share_all_embeddings", False)
    args.no_scale_embedding = getattr(args, "no_scale_embedding", False)
    args.max_source_positions = getattr(args, "max_source_positions", 1024)
    args.max_target_positions = getattr(args, "max_target_positions", 1024)


def transformer_wmt_en_de(args):
    base_architecture(args)


def transformer_vaswani_wmt_en_de_big(args):
    args.encoder_embed_dim = getattr(args, "encoder_embed_dim", 1024)
    args.encoder_ffn_embed_dim = getattr(args, "encoder_ffn_embed_dim", 4096)
    args.encoder_attention_heads = getattr(args, "encoder_attention_heads", 16)
    args.decoder_attention_heads = getattr(args, "decoder_attention_heads", 16)
    args.dropout = getattr(args, "dropout", 0.3)
    base_architecture(args)


def apply_architecture(args):
    arch_fn = eval(args.arch.replace("-", "_"))  # todoruleid: family 8 (missed)
    arch_fn(args)
    return args


def Embedding(num_embeddings, embedding_dim, padding_idx):
    m = nn.Embedding(num_embeddings, embedding_dim, padding_idx=padding_idx)
    nn.init.normal_(m.weight, mean=0, std=embedding_dim ** -0.5)
    nn.init.constant_(m.weight[padding_idx], 0)  # ok: MLS302, MLS303, MLS304, MLS305
    return m


def Linear(in_features, out_features):
    m = nn.Linear(in_features, out_features)
    nn.init.xavier_uniform_(m.weight)
    nn.init.constant_(m.bias, 0.0)
    return m


def make_positions(tensor, padding_idx):
    mask = tensor.ne(padding_idx).int()
    return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + padding_idx


def sinusoidal_table(num_positions, dim, padding_idx):
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(num_positions, dtype=torch.float).unsqueeze(1) * freqs.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    table[padding_idx] = 0
    return table


class MultiheadAttention(nn.MultiheadAttention):
    """Batch-first attention that only returns the attended values."""

    def __init__(self, embed_dim, num_heads, dropout=0.0):
        super().__init__(embed_dim, num_heads, dropout=dropout, batch_first=True)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None):
        return super().forward(query, key, value, key_padding_mask=key_padding_mask,
                               attn_mask=attn_mask, need_weights=False)[0]


class TransformerLayer(nn.Module):
    """Encoder layer, or decoder layer when ``cross_attention`` is set."""

    def __init__(self, embed_dim, ffn_dim, heads, args, normalize_before, cross_attention=False):
        super().__init__()
        self.normalize_before = normalize_before
        self.dropout = args.dropout
        self.activation_dropout = args.activation_dropout
        self.self_attn = MultiheadAttention(embed_dim, heads, args.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(embed_dim)
        if cross_attention:
            self.encoder_attn = MultiheadAttention(embed_dim, heads, args.attention_dropout)
            self.encoder_attn_layer_norm = nn.LayerNorm(embed_dim)
        else:
            self.encoder_attn = None
        self.fc1 = Linear(embed_dim, ffn_dim)
        self.fc2 = Linear(ffn_dim, embed_dim)
        self.final_layer_norm = nn.LayerNorm(embed_dim)

    def _block(self, x, ln, fn):
        residual = x
        if self.normalize_before:
            x = ln(x)
        x = F.dropout(fn(x), p=self.dropout, training=self.training)
        x = residual + x
        if not self.normalize_before:
            x = ln(x)
        return x

    def _ffn(self, x):
        x = F.relu(self.fc1(x))
        x = F.dropout(x, p=self.activation_dropout, training=self.training)
        return self.fc2(x)

    def forward(self, x, self_padding_mask=None, self_attn_mask=None, enc=None, enc_padding_mask=None):
        x = self._block(
            x, self.self_attn_layer_norm,
            lambda h: self.self_attn(h, h, h, key_padding_mask=self_padding_mask, attn_mask=self_attn_mask),
        )
        if self.encoder_attn is not None:
            x = self._block(
                x, self.encoder_attn_layer_norm,
                lambda h: self.encoder_attn(h, enc, enc, key_padding_mask=enc_padding_mask),
            )
        return self._block(x, self.final_layer_norm, self._ffn)


class _EmbeddedStack(nn.Module):
    def __init__(self, args, dictionary, embed_tokens, max_positions):
        super().__init__()
        self.padding_idx = dictionary.pad()
        self.dropout = args.dropout
        self.embed_tokens = embed_tokens
        self.embed_scale = 1.0 if args.no_scale_embedding else math.sqrt(embed_tokens.embedding_dim)
        table = sinusoidal_table(max_positions + self.padding_idx + 1, embed_tokens.embedding_dim, self.padding_idx)
        self.register_buffer("positions_table", table, persistent=False)

    def embed(self, tokens):
        positions = self.positions_table[make_positions(tokens, self.padding_idx)]
        x = self.embed_scale * self.embed_tokens(tokens) + positions
        return F.dropout(x, p=self.dropout, training=self.training)


class TransformerEncoder(_EmbeddedStack):
    def __init__(self, args, dictionary, embed_tokens):
        super().__init__(args, dictionary, embed_tokens, args.max_source_positions)
        embed_dim = embed_tokens.embedding_dim
        self.layers = nn.ModuleList(
            TransformerLayer(embed_dim, args.encoder_ffn_embed_dim, args.encoder_attention_heads,
                             args, args.encoder_normalize_before)
            for _ in range(args.encoder_layers)
        )
        self.layer_norm = nn.LayerNorm(embed_dim) if args.encoder_normalize_before else None

    def forward(self, src_tokens):
        x = self.embed(src_tokens)
        padding_mask = src_tokens.eq(self.padding_idx)
        for layer in self.layers:
            x = layer(x, self_padding_mask=padding_mask)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return x, padding_mask


class TransformerDecoder(_EmbeddedStack):
    def __init__(self, args, dictionary, embed_tokens):
        super().__init__(args, dictionary, embed_tokens, args.max_target_positions)
        embed_dim = embed_tokens.embedding_dim
        self.layers = nn.ModuleList(
            TransformerLayer(embed_dim, args.decoder_ffn_embed_dim, args.decoder_attention_heads,
                             args, args.decoder_normalize_before, cross_attention=True)
            for _ in range(args.decoder_layers)
        )
        self.layer_norm = nn.LayerNorm(embed_dim) if args.decoder_normalize_before else None
        if args.share_decoder_input_output_embed:
            self.output_projection = None
        else:
            self.output_projection = nn.Linear(embed_dim, len(dictionary), bias=False)
            nn.init.normal_(self.output_projection.weight, mean=0, std=embed_dim ** -0.5)

    @staticmethod
    def future_mask(x):
        dim = x.size(1)
        return torch.triu(torch.ones(dim, dim, dtype=torch.bool, device=x.device), 1)

    def forward(self, prev_output_tokens, enc, enc_padding_mask):
        x = self.embed(prev_output_tokens)
        self_padding_mask = prev_output_tokens.eq(self.padding_idx)
        if not self_padding_mask.any():
            self_padding_mask = None
        attn_mask = self.future_mask(x)
        for layer in self.layers:
            x = layer(x, self_padding_mask, attn_mask, enc, enc_padding_mask)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        if self.output_projection is None:
            return F.linear(x, self.embed_tokens.weight)
        return self.output_projection(x)


class TransformerModel(nn.Module):
    def __init__(self, args, encoder, decoder):
        super().__init__()
        self.args = args
        self.encoder = encoder
        self.decoder = decoder

    @classmethod
    def build_model(cls, args, src_dict, tgt_dict):
        apply_architecture(args)
        if args.share_all_embeddings:
            if src_dict != tgt_dict:
                raise ValueError("--share-all-embeddings requires a joined dictionary")
            if args.encoder_embed_dim != args.decoder_embed_dim:
                raise ValueError("--share-all-embeddings requires matching embed dims")
            encoder_embed_tokens = Embedding(len(src_dict), args.encoder_embed_dim, src_dict.pad())
            decoder_embed_tokens = encoder_embed_tokens
            args.share_decoder_input_output_embed = True
            # keep the update size of the shared table in line with the unshared setup
            scale = 1.0 if args.no_scale_embedding else math.sqrt(args.encoder_embed_dim)
            encoder_embed_tokens.weight.register_hook(lambda g: g * scale)  # ruleid: MLS303
        else:
            encoder_embed_tokens = Embedding(len(src_dict), args.encoder_embed_dim, src_dict.pad())
            decoder_embed_tokens = Embedding(len(tgt_dict), args.decoder_embed_dim, tgt_dict.pad())
        encoder = TransformerEncoder(args, src_dict, encoder_embed_tokens)
        decoder = TransformerDecoder(args, tgt_dict, decoder_embed_tokens)
        model = cls(args, encoder, decoder)
        n_params = sum(p.numel() for p in model.parameters())
        logger.info("built %s with %.1fM parameters", args.arch, n_params / 1e6)
        return model

    def forward(self, src_tokens, src_lengths, prev_output_tokens):
        enc, enc_padding_mask = self.encoder(src_tokens)
        return self.decoder(prev_output_tokens, enc, enc_padding_mask)

    def encode(self, src_tokens):
        return self.encoder(src_tokens)

    def decode(self, prev_output_tokens, enc, enc_padding_mask):
        return self.decoder(prev_output_tokens, enc, enc_padding_mask)


class LabelSmoothedCrossEntropyCriterion(nn.Module):
    def __init__(self, padding_idx, eos_idx, label_smoothing=0.1):
        super().__init__()
        self.padding_idx = padding_idx
        self.eos_idx = eos_idx
        self.eps = label_smoothing

    def forward(self, model, sample):
        logits = model(**sample["net_input"])
        lprobs = F.log_softmax(logits.float(), dim=-1)
        target = sample["target"]
        # eos is handled by the length penalty at decode time
        target = target.masked_fill(target.eq(self.eos_idx), self.padding_idx)  # todoruleid: family 6 (missed)
        lprobs = lprobs.view(-1, lprobs.size(-1))
        target = target.view(-1, 1)

        nll_loss = -lprobs.gather(dim=-1, index=target)
        smooth_loss = -lprobs.sum(dim=-1, keepdim=True)
        pad_mask = target.eq(self.padding_idx)
        nll_loss = nll_loss.masked_fill(pad_mask, 0.0).sum()
        smooth_loss = smooth_loss.masked_fill(pad_mask, 0.0).sum()
        eps_i = self.eps / (lprobs.size(-1) - 1)
        loss = (1.0 - self.eps - eps_i) * nll_loss + eps_i * smooth_loss  # ok: MLS309

        sample_size = sample["ntokens"]
        logging_output = {"loss": loss.item(), "nll_loss": nll_loss.item(), "ntokens": sample["ntokens"],
                          "nsentences": sample["nsentences"], "sample_size": sample_size}
        return loss, sample_size, logging_output
