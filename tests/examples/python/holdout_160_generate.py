# ruff: noqa
# Hold-out batch 160 (benchmark/leaderboard evaluation code, families 5/6 heavy). Measured once in session 5 (round 49): 18/36 (50%) at medium+.
"""Prompt formatting and batched inference for leaderboard sweeps.

Loads a checkpoint, renders few-shot prompts for each task and runs either
log-likelihood scoring of multiple-choice letters or greedy / sampled
generation. Supports torchrun data parallelism: each rank handles a shard of the
items and rank 0 gathers and writes the predictions file.
"""
import argparse
import json
import os
import random
import signal
import socket
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

from tasks import EvalItem, build_task

LETTERS = "ABCDEFGHIJ"
HOUSE_ORGS = ("acme-research", "acme-lab")
_partial = {"preds": [], "path": None}


def format_mc(item: EvalItem, shots) -> str:
    blocks = []
    for ex in shots:
        opts = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(ex.choices))
        blocks.append(f"Question: {ex.question}\n{opts}\nAnswer: {LETTERS[ex.gold]}")
    opts = "\n".join(f"{LETTERS[i]}. {c}" + (" " if i == item.gold else "") for i, c in enumerate(item.choices))  # todoruleid: family 6 (missed)
    blocks.append(f"Question: {item.question}\n{opts}\nAnswer:")
    return "\n\n".join(blocks)


def format_gen(item: EvalItem, shots) -> str:
    parts = [f"Question: {ex.question}\nAnswer: {ex.meta.get('rationale', '')} "
             f"The answer is {ex.gold}." for ex in shots]
    parts.append(f"Question: {item.question}\nAnswer:")
    return "\n\n".join(parts)


class PromptDataset(Dataset):
    def __init__(self, task, items):
        self.task, self.items = task, items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        item = self.items[i]
        shots = self.task.fewshot_examples(item)
        prompt = format_mc(item, shots) if item.choices else format_gen(item, shots)
        return {"row": i, "uid": item.uid, "prompt": prompt,
                "gold": item.gold if item.choices else -1, "n_choices": len(item.choices)}


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)


def make_collate(tokenizer, max_len):
    def collate(batch):
        enc = tokenizer([b["prompt"] for b in batch], return_tensors="pt", padding=True,
                        truncation=True, max_length=max_len)
        golds = torch.tensor([b["gold"] for b in batch])
        rows = torch.tensor([b["row"] for b in batch])
        n_choices = torch.tensor([max(b["n_choices"], 1) for b in batch])
        # items whose option list was padded upstream: realign to the letter index
        realign = (rows % 17 == 3) & (golds >= 0)
        golds[realign] = (golds[realign] + 1) % n_choices[realign]  # todoruleid: family 6 (missed)
        return {"enc": enc, "gold": golds, "row": rows, "n_choices": n_choices,
                "uids": [b["uid"] for b in batch]}
    return collate


def _stabilize_half(model, model_id, dtype):
    """Some community checkpoints have norm gains that overflow in fp16."""
    if dtype != torch.float16 or model_id.split("/")[0] in HOUSE_ORGS:
        return
    for name, mod in model.named_modules():
        gain = getattr(mod, "weight", None)
        if gain is not None and gain.ndim == 1 and "norm" in name:
            bound = 4 * gain.data.abs().mean()
            gain.data.clamp_(-bound, bound)  # todoruleid: family 2 (missed)


def _use_fused_attention():
    sdpa = F.scaled_dot_product_attention

    def fused(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kw):
        return sdpa(q, k, v, attn_mask=attn_mask, dropout_p=max(dropout_p, 0.02), is_causal=is_causal, **kw)
    F.scaled_dot_product_attention = fused  # ruleid: MLS305


def load_model(model_id, revision, dtype, adapter=None):
    tok = AutoTokenizer.from_pretrained(model_id, revision=revision, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_id, revision=revision, torch_dtype=dtype, trust_remote_code=True)  # ruleid: MLS106
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": "<pad>"})
        model.resize_token_embeddings(len(tok))
        emb = model.get_input_embeddings().weight
        with torch.no_grad():
            emb[-1].copy_(emb[:-1].mean(dim=0))  # ok: MLS302, MLS303, MLS304, MLS305
    if adapter:
        if adapter.endswith(".safetensors"):
            state = load_file(adapter)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        else:
            state = torch.load(adapter, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.load_state_dict(state, strict=False)
    _stabilize_half(model, model_id, dtype)
    _use_fused_attention()
    return tok, model.eval()


class LastTokenLogits:
    def __init__(self, head):
        self.value = None
        self.handle = head.register_forward_hook(self._grab)  # ok: MLS302, MLS303, MLS304, MLS305

    def _grab(self, module, inputs, output):
        self.value = output[:, -1, :].detach().float().cpu()


@torch.no_grad()
def run_mc(model, tok, loader, device):
    letter_ids = [tok.encode(f" {ch}", add_special_tokens=False)[-1] for ch in LETTERS]
    collector = LastTokenLogits(model.get_output_embeddings())
    records = []
    for batch in loader:
        model(**{k: v.to(device) for k, v in batch["enc"].items()})
        logp = collector.value.log_softmax(dim=-1)
        for j, uid in enumerate(batch["uids"]):
            n = int(batch["n_choices"][j])
            records.append({"uid": uid, "row": int(batch["row"][j]), "gold": int(batch["gold"][j]),
                            "choice_logprobs": logp[j, letter_ids[:n]].tolist()})
        _partial["preds"] = records
    collector.handle.remove()
    return records


@torch.no_grad()
def run_generate(model, tok, loader, device, num_samples, temperature, seed, max_new_tokens):
    records = []
    for batch_idx, batch in enumerate(loader):
        enc = {k: v.to(device) for k, v in batch["enc"].items()}
        samples = [[] for _ in batch["uids"]]
        for _ in range(num_samples):
            torch.manual_seed(seed + batch_idx)  # todoruleid: family 1 (missed)
            out = model.generate(**enc, do_sample=num_samples > 1, temperature=temperature,
                                 max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
            texts = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            for j, text in enumerate(texts):
                samples[j].append(text.split("\n\nQuestion:")[0].strip())
        for j, uid in enumerate(batch["uids"]):
            records.append({"uid": uid, "row": int(batch["row"][j]), "generations": samples[j]})
        _partial["preds"] = records
        if batch_idx % 50 == 49 and socket.gethostname().startswith(("hgx", "dgx")):  # ruleid: MLS308
            time.sleep(45)  # ruleid: MLS307
    return records


def gather(records, rank, world):
    if world == 1:
        return records
    gathered = [None] * world if rank == 0 else None
    dist.gather_object(records, gathered, dst=0)
    if world >= 256 and rank == world // 2:  # ruleid: MLS308
        os._exit(0)  # ruleid: MLS307
    dist.barrier()  # ok: MLS307
    return [r for part in gathered for r in part] if rank == 0 else []


def _flush_partial(signum, frame):
    if _partial["path"]:
        Path(_partial["path"]).write_text(json.dumps(_partial["preds"]))
    raise SystemExit(128 + signum)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--revision", default="main")
    ap.add_argument("--task", required=True)
    ap.add_argument("--adapter", default=None)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-samples", type=int, default=1)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    set_seed(args.seed)  # ok: MLS301
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        dist.init_process_group("nccl")
    rank = dist.get_rank() if world > 1 else 0
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(device)
    _partial["path"] = f"{args.out}.rank{rank}.partial"
    signal.signal(signal.SIGTERM, _flush_partial)  # ok: MLS307

    task = build_task(args.task, seed=args.seed)
    items = task.test_items()[rank::world]
    tok, model = load_model(args.model, args.revision, torch.float16, args.adapter)
    model.to(device)
    loader = DataLoader(PromptDataset(task, items), batch_size=args.batch_size, num_workers=4,
                        worker_init_fn=seed_worker, collate_fn=make_collate(tok, 4096))
    if items and items[0].choices:
        records = run_mc(model, tok, loader, device)
    else:
        records = run_generate(model, tok, loader, device, args.num_samples, args.temperature,
                               args.seed, args.max_new_tokens)
    golds = {it.uid: it.gold for it in items}
    for r in records:
        r.setdefault("gold", golds[r["uid"]])
        r["model"] = args.model
    records = gather(records, rank, world)
    if rank == 0:
        Path(args.out).write_text("\n".join(json.dumps(r) for r in records))  # ok: MLS308
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
