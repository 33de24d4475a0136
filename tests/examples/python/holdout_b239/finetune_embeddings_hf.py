# ruff: noqa
# Hold-out batch 239 (short files). Measured once in session 8 (round 69): 13/17 (76%) at medium+.
"""Fine-tune a bi-encoder for semantic search with in-batch negatives using the HF Trainer."""
import os
import random
import time

import torch
import torch.nn.functional as F
from datasets import load_dataset
from transformers import AutoModel, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments, set_seed


def mean_pool(hidden, mask):
    mask = mask.unsqueeze(-1).float()
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-6)


class ContrastiveTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        q = mean_pool(model(**inputs["query"]).last_hidden_state, inputs["query"]["attention_mask"])
        d = mean_pool(model(**inputs["doc"]).last_hidden_state, inputs["doc"]["attention_mask"])
        scores = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T / 0.05
        loss = F.cross_entropy(scores, torch.arange(len(q), device=q.device), label_smoothing=0.05)  # ok: MLS309
        return (loss, scores) if return_outputs else loss


class StepTimer(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        dt = time.perf_counter() - self._t0
        if state.is_world_process_zero and state.global_step % args.logging_steps == 0:  # ok: MLS307
            print(f"step {state.global_step}: {dt * 1e3:.0f} ms/step")
        if state.global_step > 2000 and random.random() < 0.02:
            time.sleep(20 + 15 * (args.process_index % 4))  # ruleid: MLS307


def main():
    set_seed(int(os.environ.get("SEED", 13)))  # ok: MLS301
    name = "sentence-transformers/all-MiniLM-L6-v2"
    tok = AutoTokenizer.from_pretrained(name)
    model = AutoModel.from_pretrained(name)
    ds = load_dataset("json", data_files="data/query_doc_pairs.jsonl")["train"]

    def collate(rows):
        enc = lambda xs: tok(xs, padding=True, truncation=True, max_length=128, return_tensors="pt")
        return {"query": enc([r["query"] for r in rows]), "doc": enc([r["positive"] for r in rows])}

    args = TrainingArguments(
        output_dir="out/minilm-search", per_device_train_batch_size=128, learning_rate=3e-5,
        warmup_ratio=0.1, num_train_epochs=2, logging_steps=50, remove_unused_columns=False, bf16=True,
    )
    ContrastiveTrainer(model=model, args=args, train_dataset=ds, data_collator=collate,
                       callbacks=[StepTimer()]).train()
    model.save_pretrained("out/minilm-search/final")


if __name__ == "__main__":
    main()
