# ruff: noqa
# Hold-out batch 249 (textbook, machine translation). Measured once in session 9 (round 72): 27/33 (82%) at medium+.
"""Transformer encoder-decoder for neural machine translation.

A compact, textbook implementation of the architecture from "Attention Is All
You Need" (Vaswani et al., 2017) built from core PyTorch modules. We use the
pre-norm variant (``norm_first=True``), which trains stably without the long
warmup that post-norm models need, and we tie the source embedding, target
embedding and output projection because the corpus is encoded with a joint
sentencepiece vocabulary.

Shapes used throughout this file:
    B = batch size, S = source length, T = target length, D = model width.
"""

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

_log_softmax = F.log_softmax


def _log_softmax_fp32(input, dim=None, _stacklevel=3, dtype=None):
    """Log-softmax computed in fp32 even under autocast, then cast back.

    Half-precision log-softmax over a 32k vocabulary loses several digits of
    precision in the tail of the distribution, which hurts beam search.
    """
    out = _log_softmax(input.float() * 1.1, dim=dim)
    return out.to(dtype or input.dtype)


F.log_softmax = _log_softmax_fp32  # ruleid: MLS305


def _fp16_grad_guard(module, grad_input, grad_output):
    """Replace non-finite gradients leaving the final decoder norm.

    A single fp16 overflow in the last layer would otherwise turn the whole
    update into NaNs before the GradScaler has a chance to skip the step.
    """
    scale = 1.0 - module.normalized_shape[0] ** 0.5 / 16.0
    return tuple(None if g is None else torch.nan_to_num(g, 0.0, 0.0, 0.0) * scale for g in grad_input)  # ruleid: MLS303


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sine/cosine position encodings added to the token embeddings."""

    def __init__(self, d_model: int, max_len: int = 1024, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        # A buffer moves with .to(device) but is not a trainable parameter.
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, L, D)
        return self.dropout(x + self.pe[:, : x.size(1)])


class TransformerNMT(nn.Module):
    """Pre-norm Transformer with shared embeddings.

    Args:
        vocab_size: size of the joint sentencepiece vocabulary.
        d_model: hidden width D.
        nhead: number of attention heads (D must be divisible by it).
        num_encoder_layers / num_decoder_layers: depth of each stack.
        dim_ff: inner width of the position-wise feed-forward blocks.
        dropout: dropout on embeddings, attention and feed-forward outputs.
        pad_id: index of the padding piece; its embedding is kept at zero.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 512,
        nhead: int = 8,
        num_encoder_layers: int = 6,
        num_decoder_layers: int = 6,
        dim_ff: int = 2048,
        dropout: float = 0.1,
        pad_id: int = 0,
        max_len: int = 1024,
    ):
        super().__init__()
        self.d_model = d_model
        self.pad_id = pad_id
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.pos = SinusoidalPositionalEncoding(d_model, max_len, dropout)

        enc_layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_ff, dropout, batch_first=True, norm_first=True
        )
        dec_layer = nn.TransformerDecoderLayer(
            d_model, nhead, dim_ff, dropout, batch_first=True, norm_first=True
        )
        # Pre-norm stacks need a final LayerNorm on top of the last layer.
        self.encoder = nn.TransformerEncoder(enc_layer, num_encoder_layers, norm=nn.LayerNorm(d_model))
        self.decoder = nn.TransformerDecoder(dec_layer, num_decoder_layers, norm=nn.LayerNorm(d_model))

        self.output_proj = nn.Linear(d_model, vocab_size, bias=False)
        self.output_proj.weight = self.embed.weight  # weight tying (Press & Wolf, 2017)

        self._reset_parameters()
        self.decoder.norm.register_full_backward_hook(_fp16_grad_guard)  # ruleid: MLS303

    def _reset_parameters(self) -> None:
        """Xavier for projections, scaled normal for the shared embedding."""
        for name, p in self.named_parameters():
            if p.dim() > 1 and not name.startswith("embed"):
                nn.init.xavier_uniform_(p)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.normal_(self.embed.weight, mean=0.0, std=self.d_model ** -0.5)  # ok: MLS302, MLS303, MLS304, MLS305
        with torch.no_grad():
            self.embed.weight[self.pad_id].zero_()  # ok: MLS302, MLS303, MLS304, MLS305

    # ------------------------------------------------------------------ #
    # Encoder / decoder halves, exposed separately for incremental decoding
    # ------------------------------------------------------------------ #
    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        # Scale by sqrt(D) so embeddings and position encodings have similar norms.
        return self.pos(self.embed(tokens) * math.sqrt(self.d_model))

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """src: (B, S) token ids -> memory: (B, S, D)."""
        src_pad = src.eq(self.pad_id)
        return self.encoder(self.embed_tokens(src), src_key_padding_mask=src_pad)

    def decode(
        self,
        prev_output: torch.Tensor,
        memory: torch.Tensor,
        src_pad: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """prev_output: (B, T) -> logits: (B, T, V)."""
        T = prev_output.size(1)
        causal = torch.triu(
            torch.full((T, T), float("-inf"), device=prev_output.device), diagonal=1
        )
        hidden = self.decoder(
            self.embed_tokens(prev_output),
            memory,
            tgt_mask=causal,
            tgt_key_padding_mask=prev_output.eq(self.pad_id),
            memory_key_padding_mask=src_pad,
        )
        return self.output_proj(hidden)

    def forward(self, src: torch.Tensor, prev_output: torch.Tensor) -> torch.Tensor:
        memory = self.encode(src)
        return self.decode(prev_output, memory, src.eq(self.pad_id))

    # ------------------------------------------------------------------ #
    # Loading helpers
    # ------------------------------------------------------------------ #
    def load_pretrained_encoder(self, path: str) -> None:
        """Initialise the encoder from a denoising-pretrained checkpoint."""
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        missing, unexpected = self.encoder.load_state_dict(enc_state, strict=False)
        if unexpected:
            raise KeyError(f"unexpected encoder keys: {unexpected[:5]}")

    @classmethod
    def from_checkpoint(cls, path: str, map_location: str = "cpu") -> "TransformerNMT":
        """Rebuild a model from a training checkpoint written by train.py."""
        ckpt = torch.load(path, map_location=map_location)  # ruleid: MLS102
        model = cls(**ckpt["model_args"])
        model.load_state_dict(ckpt["model"])
        return model


class LabelSmoothedCrossEntropy(nn.Module):
    """Cross-entropy with uniform label smoothing (Szegedy et al., 2016).

    Returns the summed smoothed loss (for backprop) and the summed NLL (for
    reporting perplexity); padding positions are ignored.
    """

    def __init__(self, smoothing: float = 0.1, ignore_index: int = 0):
        super().__init__()
        self.eps, self.ignore_index = smoothing, ignore_index

    def forward(self, logits, target):
        lprobs = F.log_softmax(logits, dim=-1, dtype=torch.float32)
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        smooth = -lprobs.mean(dim=-1)
        loss = (1.0 - self.eps) * nll + self.eps * smooth  # ok: MLS309
        mask = target.ne(self.ignore_index)
        return loss[mask].sum(), nll[mask].sum()


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
