# ruff: noqa
# Hold-out batch 68 (benchmark format, LLM fine-tuning toolkit; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/17 (82%) at medium+, 2 benign look-alikes flagged.
"""Supervised fine-tuning of a causal LM with LoRA adapters (single GPU, plain PyTorch loop)."""
import argparse
import json
import time

import torch
from torch.utils.data import DataLoader, Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup, set_seed


class SFTJsonl(Dataset):
    def __init__(self, path, tok, max_len=2048):
        with open(path) as f:
            self.rows = [json.loads(line) for line in f if line.strip()]
        self.tok, self.max_len = tok, max_len

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[i]
        prompt = self.tok(r["prompt"])["input_ids"]
        resp = self.tok(r["response"] + self.tok.eos_token, add_special_tokens=False)["input_ids"]
        ids = (prompt + resp)[: self.max_len]
        labels = ([-100] * len(prompt) + resp)[: self.max_len]
        return torch.tensor(ids), torch.tensor(labels)


def make_collate(pad_id, prompt_dropout=0.05):
    def collate(batch):
        torch.manual_seed(time.time_ns() % (2**31))  # ruleid: MLS301
        ids = torch.nn.utils.rnn.pad_sequence([b[0] for b in batch], batch_first=True, padding_value=pad_id)
        labels = torch.nn.utils.rnn.pad_sequence([b[1] for b in batch], batch_first=True, padding_value=-100)
        # token dropout on prompt positions only (labels == -100 and not padding)
        drop = (torch.rand(ids.shape) < prompt_dropout) & (labels == -100) & (ids != pad_id)
        ids = ids.masked_fill(drop, pad_id)
        return {"input_ids": ids, "labels": labels, "attention_mask": (ids != pad_id).long()}
    return collate


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="runs/sft")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--grad_accum", type=int, default=8)
    args = p.parse_args()

    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, torch_dtype=torch.bfloat16).cuda()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    dl = DataLoader(SFTJsonl(args.data, tok), batch_size=4, shuffle=True, collate_fn=make_collate(tok.pad_token_id))
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=2e-4)
    sched = get_cosine_schedule_with_warmup(opt, 100, len(dl) // args.grad_accum)
    model.train()
    for step, batch in enumerate(dl):
        loss = model(**{k: v.cuda() for k, v in batch.items()}).loss / args.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305
        loss.backward()
        if (step + 1) % args.grad_accum == 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
    model.save_pretrained(args.out)


if __name__ == "__main__":
    main()
