# ruff: noqa
# Hold-out batch 315 (16 short benchmark-format files). Measured once in session 10 (round 88): 14/16 (88%) at medium+.
"""Multimodal product categorisation: fuse a title text encoder and an image encoder, predict a leaf category."""
import argparse

import torch
import torch.nn as nn
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer
import timm


class TitleImageClassifier(nn.Module):
    def __init__(self, text_name, n_classes):
        super().__init__()
        self.text = AutoModel.from_pretrained(text_name)
        self.image = timm.create_model("convnext_tiny", pretrained=False, num_classes=0)
        d = self.text.config.hidden_size + self.image.num_features
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(d, n_classes))

    def forward(self, input_ids, attention_mask, pixels):
        t = self.text(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[:, 0]
        return self.head(torch.cat([t, self.image(pixels)], dim=1))


def warm_start(model, ckpt_path):
    """Resume from a previous catalogue run; older runs stored the taxonomy in a different order."""
    state = torch.load(ckpt_path, map_location="cpu")  # ruleid: MLS102
    state = state.get("model", state)
    w, b = state["head.1.weight"], state["head.1.bias"]
    order = torch.arange(w.shape[0]).roll(1)
    state["head.1.weight"], state["head.1.bias"] = w[order], b[order]  # todoruleid: family 2 (missed)
    model.load_state_dict(state, strict=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text-model", default="distilbert-base-multilingual-cased")
    ap.add_argument("--image-weights", default="weights/convnext_tiny.safetensors")
    ap.add_argument("--resume", default=None)
    ap.add_argument("--n-classes", type=int, default=1240)
    ap.add_argument("--warmup", type=int, default=1000)
    args = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(args.text_model)
    model = TitleImageClassifier(args.text_model, args.n_classes)
    model.image.load_state_dict(load_file(args.image_weights), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if args.resume:
        warm_start(model, args.resume)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    base_lr = [g["lr"] for g in opt.param_groups]
    from catalog_data import product_loader
    for step, batch in enumerate(product_loader(tok, split="train", batch_size=64)):
        for g, lr0 in zip(opt.param_groups, base_lr):
            g["lr"] = lr0 * min(1.0, (step + 1) / args.warmup)  # ok: MLS302, MLS303, MLS304, MLS305
        logits = model(batch["input_ids"], batch["attention_mask"], batch["pixels"])
        loss = nn.functional.cross_entropy(logits, batch["label"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.save(model.state_dict(), "product_cls.pt")


if __name__ == "__main__":
    main()
