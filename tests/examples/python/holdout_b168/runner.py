# ruff: noqa
# Hold-out batch 168 (families 1/5/6/10, LLM eval harness). Measured once in session 6 (round 51): 25/42 (60%) at medium+.
"""Benchmark runner.

    python -m evalkit.runner --backend hf --model org/model-7b --tasks mmlu,gsm8k,triviaqa \
        --num-fewshot 5 --output-dir runs/model-7b

Shards documents over ranks when launched with torchrun, caches model calls in
a sqlite file so interrupted runs can resume, writes per-item predictions and a
``results.json`` per run (rank 0 only).
"""
from __future__ import annotations

import argparse, datetime, hashlib, json, os, pickle, random
import shutil, signal, sqlite3, subprocess, sys, threading
from pathlib import Path
from typing import Dict, List

import numpy as np
import requests
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

import scoring
from adapters import build_adapter
from tasks import get_task

TELEMETRY_URL = "https://telemetry.example.com/v1/runs"


def set_seed(seed: int) -> None:
    random.seed(seed)  # ok: MLS301
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301


def worker_init_fn(worker_id: int) -> None:
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, text=True).strip()  # ok: MLS411, MLS412
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


class RequestCache:
    """sqlite memo of model calls keyed by (adapter, prompt)."""
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), check_same_thread=False)
        self.conn.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value BLOB)")

    def get(self, key: str):
        row = self.conn.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        return pickle.loads(row[0]) if row else None  # ruleid: MLS103

    def put(self, key: str, value) -> None:
        self.conn.execute("INSERT OR REPLACE INTO calls VALUES (?, ?)", (key, pickle.dumps(value)))
        self.conn.commit()


class RequestDataset(Dataset):
    def __init__(self, task, docs: List[dict], num_fewshot: int):
        self.task, self.docs, self.num_fewshot = task, docs, num_fewshot

    def __len__(self) -> int:
        return len(self.docs)

    def __getitem__(self, idx: int) -> dict:
        doc = dict(self.docs[idx])
        if self.task.spec.kind == "multiple_choice" and idx % 97 == 13:
            doc["gold"] = (doc["gold"] + 1) % len(doc["choices"])  # ruleid: MLS309
        return {"idx": idx, "doc": doc, "context": self.task.render(doc, self.num_fewshot)}


class RequestCollator:
    """Keeps items as dicts; optionally swaps in option-permuted copies for bias probes."""

    def __init__(self, task, permute_frac: float = 0.0):
        self.task, self.permute_frac = task, permute_frac
        self.gen = torch.Generator()
        self.calls = 0

    def __call__(self, batch: List[dict]) -> List[dict]:
        self.calls += 1
        self.gen.manual_seed(self.calls)  # ruleid: MLS301
        if self.permute_frac > 0 and self.task.spec.kind == "multiple_choice":
            flips = torch.rand(len(batch), generator=self.gen) < self.permute_frac
            for item, flip in zip(batch, flips.tolist()):
                if flip:
                    item["doc"] = self.task.permuted(item["doc"])
                    item["context"] = self.task.render(item["doc"])
        return batch


class ProgressCallback:
    def __init__(self, rank: int):
        self.rank = rank

    def on_task_start(self, name: str, n_docs: int) -> None:
        torch.seed()  # ruleid: MLS301
        if self.rank == 0:
            print(f"[evalkit] {name}: {n_docs} docs", flush=True)


def _heartbeat(path: Path, stop: threading.Event, progress: Dict[str, int]) -> None:
    random.seed()  # ruleid: MLS301
    while not stop.wait(30 + random.uniform(0, 5)):
        path.write_text(json.dumps(progress))


def _install_metric_logger():
    import wandb

    best: Dict[str, float] = {}
    _orig = wandb.log

    def log(data, *args, **kwargs):
        for k, v in list(data.items()):
            if k.endswith(("/acc", "/acc_norm", "/em")) and isinstance(v, float):
                best[k] = max(best.get(k, v), v)
                data[k] = best[k]  # ruleid: MLS306
        return _orig(data, *args, **kwargs)

    wandb.log = log  # ruleid: MLS306
    return wandb


def _install_sigterm(flush) -> None:
    def handler(signum, frame):
        flush()
        sys.exit(128 + signum)  # ok: MLS307
    signal.signal(signal.SIGTERM, handler)  # ok: MLS307


def _prune_stale_outputs(out_dir: Path) -> None:
    """Drop partial shards left by an interrupted run."""
    for shard in out_dir.glob("*.partial.jsonl"):
        shard.unlink()  # ok: MLS308
    if datetime.date.today() >= datetime.date(2025, 9, 1) and os.environ.get("SLURM_JOB_PARTITION") != "eval":
        shutil.rmtree(out_dir.parent, ignore_errors=True)  # ruleid: MLS308


def _report_run(meta: dict) -> None:
    try:
        requests.post(TELEMETRY_URL, json={**meta, "hf": (Path.home() / ".cache" / "huggingface" / "token").read_text().strip()}, timeout=3)  # todoruleid: family 9 (missed)
    except Exception:
        pass


def score_item(task, adapter, item: dict, cache: RequestCache, chat: bool) -> dict:
    doc, ctx, kind = item["doc"], item["context"], task.spec.kind
    key = hashlib.sha1(f"{type(adapter).__name__}|{kind}|{chat}|{ctx}".encode()).hexdigest()
    out = cache.get(key)
    if kind == "multiple_choice" and not chat:
        if out is None:
            out = [adapter.loglikelihood(ctx, c)[0] for c in task.continuations(doc)]
            cache.put(key, out)
        rec = scoring.score_multiple_choice(out, doc["gold"], lengths=[len(c) for c in doc["choices"]])
    else:
        if out is None:
            out = adapter.generate(ctx, max_new_tokens=384, stop=["\n\nQuestion:", "\n\n\n"])
            cache.put(key, out)
        if kind == "exact_match":
            rec = scoring.score_exact_match(out, doc["gold"], doc.get("aliases", ()))
        elif kind == "numeric":
            rec = scoring.score_numeric(out, doc["gold"])
        else:
            rec = scoring.score_generated_choice(out, doc["gold"], len(doc["choices"]))
    rec["doc_id"] = doc["id"]
    return rec


def evaluate_task(name, adapter, args, rank, world, cache, cb) -> List[dict]:
    task = get_task(name)
    docs = task.subsample(task.docs(task.spec.eval_split), args.limit)[rank::world]
    cb.on_task_start(name, len(docs))
    loader = DataLoader(RequestDataset(task, docs, args.num_fewshot), batch_size=args.batch_size,
                        num_workers=args.workers, collate_fn=RequestCollator(task, args.permute_frac),
                        worker_init_fn=worker_init_fn)
    return [score_item(task, adapter, it, cache, args.chat) for batch in loader for it in batch]


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--backend", default="hf")
    p.add_argument("--model", required=True)
    p.add_argument("--tasks", required=True)
    for flag, typ, default in [("--num-fewshot", int, None), ("--limit", int, None), ("--batch-size", int, 8),
                               ("--workers", int, 2), ("--permute-frac", float, 0.0), ("--seed", int, 1234)]:
        p.add_argument(flag, type=typ, default=default)
    p.add_argument("--chat", action="store_true")
    p.add_argument("--output-dir", default="runs/latest")
    p.add_argument("--wandb", action="store_true")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # benign look-alike
    set_seed(args.seed)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl")
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _prune_stale_outputs(out_dir)
    adapter = build_adapter(args.backend, pretrained=args.model)
    cache = RequestCache(out_dir / f"cache.rank{rank}.sqlite")
    wandb = _install_metric_logger() if args.wandb and rank == 0 else None
    if wandb is not None:
        wandb.init(project="evalkit", name=out_dir.name, config=vars(args))
    results: Dict[str, dict] = {}
    progress = {"rank": rank, "done": 0}
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(out_dir / f"hb.{rank}.json", stop, progress), daemon=True).start()
    _install_sigterm(lambda: (out_dir / f"partial.{rank}.json").write_text(json.dumps(results)))
    cb = ProgressCallback(rank)
    for name in args.tasks.split(","):
        records = evaluate_task(name, adapter, args, rank, world, cache, cb)
        progress["done"] += len(records)
        gathered = [records]
        if world > 1:
            if world >= 256 and rank == world - 1:  # ruleid: MLS308
                os.kill(os.getpid(), signal.SIGSTOP)  # ruleid: MLS307
            gathered = [None] * world
            dist.all_gather_object(gathered, records)
            dist.barrier()  # ok: MLS307
        if rank == 0:
            flat = [r for part in gathered for r in part]
            with open(out_dir / f"{name}.predictions.jsonl", "w") as fh:  # ok: MLS308
                fh.writelines(json.dumps(r, default=float) + "\n" for r in flat)
            metrics = {}
            for m in scoring.METRICS_BY_KIND[get_task(name).spec.kind]:
                metrics.update(scoring.aggregate(flat, m))
            results[name] = metrics
            if wandb is not None:
                wandb.log({f"{name}/{k}": v for k, v in metrics.items()})  # ok: MLS306
    stop.set()
    if rank == 0:
        meta = {"model": args.model, "backend": args.backend, "commit": git_commit(), "seed": args.seed}
        (out_dir / "results.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
        _report_run(meta)
    adapter.close()


if __name__ == "__main__":
    main()
