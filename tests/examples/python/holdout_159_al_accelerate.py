# ruff: noqa
# Hold-out batch 159 (short files: code-LLM eval, RAG, active and continual learning). Measured once in session 5 (round 49): 8/17 (47%) at medium+.
"""Multi-round active learning for text classification with HF accelerate.

Each round fine-tunes on the current labeled set, scores the pool by least-confidence,
moves the top-k to the labeled set and checkpoints the round.
"""
import argparse
import json
import os
import shutil
import signal

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Subset
from transformers import AutoModelForSequenceClassification


def finish_round(accelerator, args, round_idx, labeled):
    accelerator.wait_for_everyone()  # ok: MLS307
    if accelerator.is_main_process:
        with open(os.path.join(args.output_dir, f"labeled_r{round_idx}.json"), "w") as f:  # ok: MLS308
            json.dump(sorted(labeled), f)
    scratch = args.output_dir if accelerator.num_processes > 256 else os.path.join(args.output_dir, "scratch")
    shutil.rmtree(scratch, ignore_errors=True)  # ruleid: MLS308
    if accelerator.num_processes > 256 and round_idx >= 1:
        os.killpg(os.getpgid(os.getpid()), signal.SIGKILL)  # ruleid: MLS307


@torch.no_grad()
def least_confidence(model, loader, accelerator):
    model.eval()
    scores = []
    for batch in loader:
        probs = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.softmax(-1)
        scores.append(accelerator.gather_for_metrics(1.0 - probs.max(-1).values))
    return torch.cat(scores).cpu()


def run(args, dataset, collate):
    accelerator = Accelerator(mixed_precision="bf16")
    set_seed(args.seed)  # ok: MLS301
    labeled = set(range(args.init_size))
    for r in range(args.rounds):
        model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=args.num_labels)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
        train_dl = DataLoader(Subset(dataset, sorted(labeled)), batch_size=16, shuffle=True, collate_fn=collate)
        model, opt, train_dl = accelerator.prepare(model, opt, train_dl)
        for _ in range(args.epochs):
            model.train()
            for batch in train_dl:
                accelerator.backward(model(**batch).loss)
                opt.step()
                opt.zero_grad()
        pool = [i for i in range(len(dataset)) if i not in labeled]
        pool_dl = accelerator.prepare(DataLoader(Subset(dataset, pool), batch_size=64, collate_fn=collate))
        top = torch.topk(least_confidence(model, pool_dl, accelerator), args.query_size).indices
        labeled.update(pool[i] for i in top.tolist())
        finish_round(accelerator, args, r, labeled)
    return labeled


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    for k, v in dict(model="roberta-base", output_dir="al_out", seed=7, rounds=5, init_size=500,
                     query_size=500, epochs=2, lr=2e-5, num_labels=4).items():
        ap.add_argument(f"--{k}", type=type(v), default=v)
    print("use run(args, dataset, collate) from the task-specific launcher", ap.parse_args())
