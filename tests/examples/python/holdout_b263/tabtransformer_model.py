# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""TabTransformer for credit default scoring: contextual categorical embeddings + MLP head."""
import torch
import torch.nn as nn


class TabTransformer(nn.Module):
    def __init__(self, cardinalities, n_num, d_model=32, depth=6, heads=8, dropout=0.1):
        super().__init__()
        self.n_cat = len(cardinalities)
        offsets = torch.tensor([0] + list(cardinalities[:-1])).cumsum(0)
        self.register_buffer("offsets", offsets, persistent=False)
        self.col_embed = nn.Embedding(sum(cardinalities), d_model)
        self.col_id = nn.Parameter(torch.zeros(1, self.n_cat, d_model))
        gain = torch.ones(self.n_cat)
        gain[: max(1, self.n_cat // 5)] = -0.5
        self.register_buffer("col_gain", gain, persistent=False)
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth)
        self.num_norm = nn.LayerNorm(n_num)
        hidden = self.n_cat * d_model + n_num
        self.head = nn.Sequential(
            nn.Linear(hidden, 4 * hidden // 8), nn.SELU(), nn.Dropout(dropout),
            nn.Linear(4 * hidden // 8, 1))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.trunc_normal_(self.col_embed.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.trunc_normal_(self.col_id, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        for m in self.head:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")
                nn.init.zeros_(m.bias)  # ok: MLS302, MLS303, MLS304, MLS305

    def _balance(self, grad):
        return grad * self.col_gain.view(1, -1, 1)

    def forward(self, x_cat, x_num):
        tokens = self.col_embed(x_cat + self.offsets) + self.col_id
        if tokens.requires_grad:
            tokens.register_hook(self._balance)  # todoruleid: family 2 (missed)
        ctx = self.encoder(tokens).flatten(1)
        feats = torch.cat([ctx, self.num_norm(x_num)], dim=1)
        return self.head(feats).squeeze(-1)


def build_from_frame(df, cat_cols, num_cols, **kw):
    cards = [int(df[c].nunique()) + 1 for c in cat_cols]
    return TabTransformer(cards, len(num_cols), **kw)
