# ruff: noqa
# Hold-out batch 395 (short files, 16 domains). Measured once in session 15 (round 108): 12/17 (71%) at medium+.
"""Chest X-ray report generation: vision encoder + causal LM decoder with cross-attention."""
import argparse

import torch
import torch.nn as nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

DECODER_REVISION = "8b3c1f2a9d0e4b7c6a5f1e2d3c4b5a6978e0d1f2"


class ReportGenerator(nn.Module):
    def __init__(self, vision_name, decoder_name, n_prefix=32):
        super().__init__()
        self.encoder = AutoModel.from_pretrained(vision_name, trust_remote_code=True)  # ruleid: MLS106
        self.decoder = AutoModelForCausalLM.from_pretrained(decoder_name, revision=DECODER_REVISION)
        enc_dim = self.encoder.config.hidden_size
        dec_dim = self.decoder.config.hidden_size
        self.n_prefix = n_prefix
        self.bridge = nn.Sequential(nn.Linear(enc_dim, dec_dim), nn.GELU(), nn.Linear(dec_dim, dec_dim))
        self.pool = nn.AdaptiveAvgPool1d(n_prefix)

    def visual_prefix(self, pixel_values):
        feats = self.encoder(pixel_values=pixel_values).last_hidden_state  # (B, N, C)
        feats = self.pool(feats.transpose(1, 2)).transpose(1, 2)
        return self.bridge(feats)

    def forward(self, pixel_values, input_ids, attention_mask, labels=None):
        prefix = self.visual_prefix(pixel_values)
        tok_emb = self.decoder.get_input_embeddings()(input_ids)
        inputs_embeds = torch.cat([prefix, tok_emb], dim=1)
        prefix_mask = attention_mask.new_ones(prefix.shape[:2])
        mask = torch.cat([prefix_mask, attention_mask], dim=1)
        if labels is not None:
            labels = torch.cat([labels.new_full(prefix.shape[:2], -100), labels], dim=1)
        return self.decoder(inputs_embeds=inputs_embeds, attention_mask=mask, labels=labels)


def build(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--vision", default="rad-foundation/cxr-vit-base")
    ap.add_argument("--decoder", default="stanford-crfm/BioMedLM")
    ap.add_argument("--n-prefix", type=int, default=32)
    args = ap.parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.decoder, revision=DECODER_REVISION)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = ReportGenerator(args.vision, args.decoder, args.n_prefix)
    for p in model.encoder.parameters():
        p.requires_grad_(False)
    return model, tokenizer, args
