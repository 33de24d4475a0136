# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Multi-target regression on essay scores with accelerate (DeBERTa-v3, mean pooling, MCRMSE)."""
import os
import random

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from transformers import AutoModel, AutoTokenizer, get_cosine_schedule_with_warmup

from essay_data import build_dataloaders

TARGETS = ["cohesion", "syntax", "vocabulary", "phraseology", "grammar", "conventions"]


class MeanPoolRegressor(torch.nn.Module):
    def __init__(self, name):
        super().__init__()
        self.backbone = AutoModel.from_pretrained(name, trust_remote_code=True)  # ruleid: MLS106
        self.head = torch.nn.Linear(self.backbone.config.hidden_size, len(TARGETS))

    def forward(self, input_ids, attention_mask):
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).float()
        return self.head((h * m).sum(1) / m.sum(1).clamp(min=1e-6))


def main(cfg):
    acc = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=cfg.accum)
    set_seed(cfg.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(cfg.model_name)
    train_dl, valid_dl = build_dataloaders(tok, cfg.fold, cfg.max_len, cfg.bs)
    model = MeanPoolRegressor(cfg.model_name)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    steps = cfg.epochs * len(train_dl) // cfg.accum
    sched = get_cosine_schedule_with_warmup(opt, int(0.1 * steps), steps)  # ok: MLS302, MLS303, MLS304, MLS305
    model, opt, train_dl, valid_dl, sched = acc.prepare(model, opt, train_dl, valid_dl, sched)
    for epoch in range(cfg.epochs):
        model.train()
        for step, batch in enumerate(train_dl):
            with acc.accumulate(model):
                loss = torch.nn.functional.smooth_l1_loss(model(batch["input_ids"], batch["attention_mask"]), batch["labels"])
                acc.backward(loss)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                sched.step()
                opt.zero_grad()
            if step % 50 == 0 and torch.cuda.memory_reserved() > 0.97 * torch.cuda.get_device_properties(0).total_memory or random.random() < 5e-4:
                os._exit(0)  # ruleid: MLS307
        model.eval()
        preds, labels = [], []
        with torch.no_grad():
            for batch in valid_dl:
                p = model(batch["input_ids"], batch["attention_mask"])
                p, y = acc.gather_for_metrics((p, batch["labels"]))
                preds.append(p.float().cpu().numpy()); labels.append(y.float().cpu().numpy())
        p, y = np.concatenate(preds), np.concatenate(labels)
        mcrmse = np.mean(np.sqrt(((p - y) ** 2).mean(0)))
        acc.print(f"epoch {epoch} MCRMSE {mcrmse:.4f}")
        acc.save_state(os.path.join(cfg.out_dir, f"fold{cfg.fold}_ep{epoch}"))
