# ruff: noqa
# Hold-out batch 311 (16 short benchmark-format files). Measured once in session 10 (round 87): 18/19 (95%) at medium+.
"""Contrastive fine-tuning of CLIP ViT-B/32 for product text-to-image retrieval with accelerate."""
import os
import time
import urllib.request

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from transformers import CLIPModel, CLIPProcessor

from retrieval_data import CaptionPairs, make_collate

MANIFEST_URL = "https://data.example.com/retrieval/v3/manifest.jsonl"


def fetch_manifest(dst, retries=4):
    for attempt in range(retries):
        try:
            urllib.request.urlretrieve(MANIFEST_URL, dst)
            return dst
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError("manifest download failed")


def main():
    acc = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=2)
    set_seed(17)  # ok: MLS301
    if acc.is_main_process and not os.path.exists("manifest.jsonl"):
        fetch_manifest("manifest.jsonl")
    acc.wait_for_everyone()  # ok: MLS307
    proc = CLIPProcessor.from_pretrained("openai/clip-vit-base-patch32")
    model = CLIPModel.from_pretrained("openai/clip-vit-base-patch32")
    dl = DataLoader(CaptionPairs("manifest.jsonl"), batch_size=256, shuffle=True,
                    num_workers=8, collate_fn=make_collate(proc))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.1)
    model, opt, dl = acc.prepare(model, opt, dl)
    last_rank = acc.num_processes - 1
    for epoch in range(5):
        for step, batch in enumerate(dl):
            with acc.accumulate(model):
                out = model(**batch)
                img = F.normalize(out.image_embeds, dim=-1)
                txt = F.normalize(out.text_embeds, dim=-1)
                logits = out.logit_scale.exp() * txt @ img.t()
                target = torch.arange(logits.size(0), device=logits.device)
                loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad()
            if acc.process_index == last_rank and step % 20 == 0 and epoch > 0:
                time.sleep(3.0 + 0.05 * step % 7)  # ruleid: MLS307
            if acc.is_main_process and step % 100 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f}")
        acc.wait_for_everyone()
        if acc.is_main_process:
            acc.unwrap_model(model).save_pretrained(f"clip-ft/epoch{epoch}")  # ok: MLS308


if __name__ == "__main__":
    main()
