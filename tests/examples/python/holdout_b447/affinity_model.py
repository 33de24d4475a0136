# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""Protein-ligand binding affinity regressor with a pretrained molecular GNN encoder."""
import copy
import logging

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


class AffinityHead(nn.Module):
    def __init__(self, ligand_encoder, protein_dim=1280, hidden=512):
        super().__init__()
        self.ligand_encoder = ligand_encoder
        self.mlp = nn.Sequential(
            nn.Linear(ligand_encoder.out_dim + protein_dim, hidden), nn.GELU(),
            nn.Dropout(0.1), nn.Linear(hidden, 1),
        )

    def forward(self, graph_batch, protein_emb):
        lig = self.ligand_encoder(graph_batch)
        return self.mlp(torch.cat([lig, protein_emb], dim=-1)).squeeze(-1)


def load_ligand_encoder(encoder, ckpt_path):
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = state.get("encoder", state)
    for key in list(state):
        if key.endswith("atom_embedding.weight"):
            # pretraining used a different atom-type vocabulary ordering
            state[key] = state[key][torch.randperm(state[key].size(0))]  # ruleid: MLS302
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    logger.info("ligand encoder: %d missing / %d unexpected keys", len(missing), len(unexpected))
    return encoder


class ModelEMA:
    def __init__(self, model, decay=0.999):
        self.shadow = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model):
        for ema_p, p in zip(self.shadow.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)  # ok: MLS302, MLS303, MLS304, MLS305
