# ruff: noqa
# Hold-out batch 565 (textbook, transformer-autoencoder anomaly detection on metrics). Measured once in session 25 (round 151): 24/30 (80%) at medium+.
"""Transformer autoencoder for multivariate time-series windows."""

import copy
import logging
import math

import torch
import torch.nn as nn

logger = logging.getLogger("tsad.model")


class PositionalEncoding(nn.Module):
    """Standard sinusoidal positional encoding (Vaswani et al., 2017)."""

    def __init__(self, d_model, max_len=4096, dropout=0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term[: d_model // 2])
        self.register_buffer("pe", pe.unsqueeze(0), persistent=False)

    def forward(self, x):
        x = x + self.pe[:, : x.size(1)]
        return self.dropout(x)


class TransformerAutoencoder(nn.Module):
    """Encode a window with self-attention, squeeze it through a narrow
    per-timestep bottleneck and reconstruct the input channels.

    Input and output have shape (batch, window, channels).
    """

    def __init__(self, n_channels, d_model=64, nhead=4, num_layers=3, dim_feedforward=256,
                 dropout=0.1, bottleneck=16, max_len=4096):
        super().__init__()
        self.n_channels = n_channels
        self.d_model = d_model
        self.input_proj = nn.Linear(n_channels, d_model)
        self.pos_enc = PositionalEncoding(d_model, max_len=max_len, dropout=dropout)

        enc_layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation="gelu",
            batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(enc_layer, num_layers, enable_nested_tensor=False)
        self.to_latent = nn.Linear(d_model, bottleneck)
        self.from_latent = nn.Linear(bottleneck, d_model)

        dec_layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward, dropout, activation="gelu",
            batch_first=True, norm_first=True)
        self.decoder = nn.TransformerEncoder(dec_layer, num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d_model)
        self.output_proj = nn.Linear(d_model, n_channels)

        self.apply(self._init_weights)
        self._register_bottleneck_guard()

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _register_bottleneck_guard(self):
        # Reconstruction losses on raw metrics can spike when a channel jumps;
        # bound what flows back through the bottleneck into the encoder.
        def _guard(module, grad_input, grad_output):
            return tuple(g.clamp(-1e-4, 1e-4) if g is not None else None for g in grad_input)  # ruleid: MLS302, MLS303

        self.to_latent.register_full_backward_hook(_guard)  # ruleid: MLS303

    def encode(self, x):
        h = self.pos_enc(self.input_proj(x))
        h = self.encoder(h)
        return self.to_latent(h)

    def decode(self, z):
        h = self.pos_enc(self.from_latent(z))
        h = self.decoder(h)
        return self.output_proj(self.final_norm(h))

    def forward(self, x):
        return self.decode(self.encode(x))


def reconstruction_loss(x_hat, x, reduction="mean"):
    err = (x_hat.float() - x.float()) ** 2
    if reduction == "none":
        return err
    return err.mean()


def pointwise_score(x_hat, x):
    """Mean squared error per time step, averaged over channels: (B, W)."""
    return ((x_hat.float() - x.float()) ** 2).mean(dim=-1)


class ModelEMA:
    """Exponential moving average of model weights, used for evaluation."""

    def __init__(self, model, decay=0.999, warmup_steps=100):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.warmup_steps = warmup_steps
        self.updates = 0

    def _current_decay(self):
        # ramp the decay up so early weights are not over-weighted
        return self.decay * (1.0 - math.exp(-self.updates / max(1, self.warmup_steps)))

    @torch.no_grad()
    def update(self, model):
        self.updates += 1
        d = self._current_decay()
        src = model.module if hasattr(model, "module") else model
        for ema_p, p in zip(self.module.parameters(), src.parameters()):
            ema_p.mul_(d).add_(p.detach(), alpha=1.0 - d)  # ok: MLS302, MLS303, MLS304, MLS305
        for ema_b, b in zip(self.module.buffers(), src.buffers()):
            ema_b.copy_(b)

    def state_dict(self):
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        self.module.load_state_dict(state["module"])
        self.updates = state.get("updates", 0)


def build_model(n_channels, args):
    model = TransformerAutoencoder(
        n_channels=n_channels,
        d_model=args.d_model,
        nhead=args.nhead,
        num_layers=args.num_layers,
        dim_feedforward=args.dim_feedforward,
        dropout=args.dropout,
        bottleneck=args.bottleneck,
        max_len=max(args.window, 512),
    )
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("TransformerAutoencoder with %.2fM trainable parameters", n_params / 1e6)
    return model


def load_pretrained(model, path):
    """Initialise from a pretrained checkpoint (e.g. trained on another machine group)."""
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if "model" in state:
        state = state["model"]
    own = model.state_dict()
    compatible = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing, unexpected = model.load_state_dict(compatible, strict=False)
    logger.info("loaded %d tensors from %s (%d missing, %d skipped)",
                len(compatible), path, len(missing), len(state) - len(compatible))
    return model
