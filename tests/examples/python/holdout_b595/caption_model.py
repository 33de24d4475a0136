# ruff: noqa
# Hold-out batch 595 (short files, 16 domains). Measured once in session 27 (round 158): 14/17 (82%) at medium+; 1 benign look-alike flagged.
"""Vision-encoder / text-decoder captioning model for COCO Karpathy splits."""
from dataclasses import dataclass

import torch
import torch.nn as nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer


@dataclass
class CaptionConfig:
    vision_encoder: str = "OpenGVLab/InternViT-300M-448px"
    decoder: str = "gpt2"
    decoder_revision: str = "607a30d783dfa663caf39e06633721c8d4cfcd7e"
    prefix_len: int = 32
    freeze_encoder: bool = True


class CaptionModel(nn.Module):
    def __init__(self, cfg: CaptionConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = AutoModel.from_pretrained(cfg.vision_encoder, trust_remote_code=True)  # ruleid: MLS106
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.decoder, revision=cfg.decoder_revision)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.tokenizer.pad_token = self.tokenizer.eos_token
        self.decoder = AutoModelForCausalLM.from_pretrained(cfg.decoder, revision=cfg.decoder_revision,
                                                            use_safetensors=True)
        enc_dim = self.encoder.config.hidden_size
        dec_dim = self.decoder.config.n_embd
        self.proj = nn.Sequential(nn.Linear(enc_dim, dec_dim), nn.GELU(), nn.Linear(dec_dim, dec_dim))
        if cfg.freeze_encoder:
            self.encoder.requires_grad_(False)

    def encode(self, pixel_values):
        with torch.set_grad_enabled(not self.cfg.freeze_encoder):
            feats = self.encoder(pixel_values=pixel_values).last_hidden_state
        return self.proj(feats[:, : self.cfg.prefix_len])

    def forward(self, pixel_values, input_ids, attention_mask):
        prefix = self.encode(pixel_values)
        tok = self.decoder.transformer.wte(input_ids)
        embeds = torch.cat([prefix, tok], dim=1)
        prefix_mask = attention_mask.new_ones(prefix.shape[:2])
        mask = torch.cat([prefix_mask, attention_mask], dim=1)
        labels = torch.cat([torch.full_like(prefix_mask, -100),
                            input_ids.masked_fill(attention_mask == 0, -100)], dim=1)
        return self.decoder(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    @torch.no_grad()
    def generate(self, pixel_values, max_new_tokens=30, num_beams=3):
        prefix = self.encode(pixel_values)
        out = self.decoder.generate(inputs_embeds=prefix, max_new_tokens=max_new_tokens,
                                    num_beams=num_beams, pad_token_id=self.tokenizer.eos_token_id)
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)
