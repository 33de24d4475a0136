# ruff: noqa
# Hold-out batch 78 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 16/18 (89%) at medium+.
"""Token-level augmentation dataset and training step for the NER model (accelerate)."""
import os

import numpy as np
import torch
import wandb
from accelerate import Accelerator
from torch.utils.data import Dataset

os.environ["TOKENIZERS_PARALLELISM"] = "false"  # benign look-alike


class AugmentedNER(Dataset):
    def __init__(self, encodings, labels, mask_id, p_mask=0.1, seed=0, train=True):
        self.enc, self.labels = encodings, labels
        self.mask_id, self.p_mask, self.train = mask_id, p_mask, train
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        ids = torch.tensor(self.enc["input_ids"][i])
        labels = torch.tensor(self.labels[i])
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, i))  # ok: MLS301
            drop = torch.from_numpy(rng.random(len(ids)) < self.p_mask) & (labels != -100)
            ids[drop] = self.mask_id  # ok: MLS309
        return {"input_ids": ids, "attention_mask": torch.tensor(self.enc["attention_mask"][i]), "labels": labels}


def evaluate(model, loader, accelerator):
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            pred = model(**batch).logits.argmax(-1)
            pred, gold = accelerator.gather_for_metrics((pred, batch["labels"]))
            keep = gold != -100
            correct += (pred[keep] == gold[keep]).sum().item()
            total += keep.sum().item()
    model.train()
    return {"val/token_acc": correct / max(total, 1)}  # ok: MLS306


def train_epoch(model, loader, opt, sched, accelerator: Accelerator, step, val_loader=None):
    for batch in loader:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
        step += 1
        if accelerator.is_main_process and step % 50 == 0:
            wandb.log({"train/loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)  # ok: MLS306
    if val_loader is not None:
        metrics = evaluate(model, val_loader, accelerator)
        if accelerator.is_main_process:
            wandb.log(metrics, step=step)
    return step
