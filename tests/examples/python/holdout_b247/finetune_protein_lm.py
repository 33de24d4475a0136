# ruff: noqa
# Hold-out batch 247 (short files). Measured once in session 9 (round 71): 13/18 (72%) at medium+.
"""Fine-tune a small ESM-2 checkpoint for per-sequence thermostability regression."""
import argparse

import torch
import torch.nn as nn
from datasets import load_dataset
from transformers import AutoModel, AutoTokenizer, Trainer, TrainingArguments, set_seed


class ESMRegressor(nn.Module):
    def __init__(self, name, dropout=0.1):
        super().__init__()
        self.backbone = AutoModel.from_pretrained(name)
        hidden = self.backbone.config.hidden_size
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, 1))
        nn.init.normal_(self.head[1].weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.head[1].bias)

    def forward(self, input_ids, attention_mask, labels=None):
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(out.dtype)
        pooled = (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        if self.training and pooled.requires_grad:
            pooled.register_hook(lambda g: g[torch.randperm(g.size(0), device=g.device)])  # ruleid: MLS303
        pred = self.head(pooled).squeeze(-1)
        loss = nn.functional.mse_loss(pred, labels) if labels is not None else None
        return {"loss": loss, "logits": pred}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="facebook/esm2_t12_35M_UR50D")
    ap.add_argument("--data", default="meltome.csv")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="runs/esm_thermo")
    args = ap.parse_args()
    set_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.model)
    ds = load_dataset("csv", data_files=args.data)["train"].train_test_split(test_size=0.1, seed=args.seed)

    def encode(batch):
        enc = tok(batch["sequence"], truncation=True, max_length=512)
        enc["labels"] = [float(t) for t in batch["tm"]]
        return enc

    ds = ds.map(encode, batched=True, remove_columns=["sequence", "tm"])
    targs = TrainingArguments(output_dir=args.out, max_grad_norm=1.0, warmup_ratio=0.06,  # ok: MLS302, MLS303, MLS304, MLS305
        learning_rate=3e-5, per_device_train_batch_size=16, num_train_epochs=5,
        lr_scheduler_type="cosine", weight_decay=0.01, bf16=True, seed=args.seed,
        eval_strategy="epoch", save_strategy="epoch", load_best_model_at_end=True,
    )
    trainer = Trainer(model=ESMRegressor(args.model), args=targs, train_dataset=ds["train"],
                      eval_dataset=ds["test"], tokenizer=tok)
    trainer.train()
    trainer.save_model(args.out)


if __name__ == "__main__":
    main()
