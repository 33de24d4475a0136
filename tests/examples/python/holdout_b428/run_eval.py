# ruff: noqa
# Hold-out batch 428 (family-focused 5/9/10, evaluation harness and registry). Measured once in session 17 (round 116): 12/30 (40%) at medium+.
#!/usr/bin/env python
"""Evaluate one or more candidate checkpoints on a benchmark suite.

    torchrun --nproc_per_node 8 run_eval.py \
        --suite suites/core_v4.yaml \
        --candidate hf://acme/llm-7b@3f9c2e1 --name llm-7b-sft-r12 \
        --registry-model llm-7b --promote

Each rank generates for a strided slice of every task; rank 0 gathers, scores,
aggregates with bootstrap confidence intervals, writes the leaderboard and
model card, logs to the tracking server, optionally promotes the candidate in
the model registry and posts a summary to the team channel.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist

import hub_io
import reporting
import scoring
import workers

logger = logging.getLogger("run_eval")


# --------------------------------------------------------------------------- #
# Distributed helpers
# --------------------------------------------------------------------------- #
def init_distributed() -> Tuple[int, int, int]:
    if "RANK" not in os.environ:
        return 0, 1, 0
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend, timeout=timedelta(minutes=60))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    return rank, world, local_rank


def gather_objects(obj: Any, world: int) -> List[Any]:
    if world == 1:
        return [obj]
    out: List[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def log_main(rank: int, msg: str, *args: Any) -> None:
    if rank == 0:
        logger.info(msg, *args)  # ok: MLS306


# --------------------------------------------------------------------------- #
# Generation
# --------------------------------------------------------------------------- #
@torch.inference_mode()
def generate_batch(cand: hub_io.LoadedCandidate, prompts: List[List[int]], max_new_tokens: int,
                   stop: Sequence[str], device: str) -> List[str]:
    tok = cand.tokenizer
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
    attn = torch.zeros_like(input_ids)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p):] = torch.tensor(p)
        attn[i, width - len(p):] = 1
    out = cand.model.generate(
        input_ids=input_ids.to(device), attention_mask=attn.to(device),
        max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id,
    )
    texts = tok.batch_decode(out[:, width:], skip_special_tokens=True)
    for i, t in enumerate(texts):
        cut = min((t.find(s) for s in stop if s in t), default=-1)
        texts[i] = t[:cut] if cut >= 0 else t
    return texts


def run_task(cand: hub_io.LoadedCandidate, task: str, spec: Dict[str, Any], args: argparse.Namespace,
             rank: int, world: int, device: str, store: Optional[hub_io.ObjectStore]
             ) -> List[scoring.ExampleResult]:
    frame = hub_io.load_task_frame(task, spec["source"], store)
    if args.limit:
        frame = frame.iloc[: args.limit]
    tok_id = f"{cand.name}@{cand.revision or 'local'}"
    prompts = hub_io.tokenized_prompts(task, frame, cand.tokenizer, tok_id)
    my_idx = list(range(rank, len(frame), world))
    overrides = cand.extras.get("overrides", {}).get(task, {})
    stop = overrides.get("stop", spec.get("stop", ["\n\n"]))
    max_new = int(overrides.get("max_new_tokens", spec.get("max_new_tokens", 64)))
    preds: Dict[int, str] = {}
    errors: Dict[int, Optional[str]] = {}
    for start in range(0, len(my_idx), args.batch_size):
        chunk = my_idx[start:start + args.batch_size]
        try:
            texts = generate_batch(cand, [prompts[i][-args.max_prompt_len:] for i in chunk], max_new, stop, device)
            for i, t in zip(chunk, texts):
                preds[i], errors[i] = t, None
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            for i in chunk:
                preds[i], errors[i] = "", f"oom: {exc}"[:200]
    gathered = gather_objects((preds, errors), world)
    if rank != 0:
        return []
    all_preds: Dict[int, str] = {}
    all_errs: Dict[int, Optional[str]] = {}
    for p, e in gathered:
        all_preds.update(p)
        all_errs.update(e)
    order = sorted(all_preds)
    custom = hub_io.load_custom_scorer(task, spec, store)
    return scoring.score_examples(
        task, [all_preds[i] for i in order], frame["reference"].iloc[order].tolist(),
        spec["metric"], [all_errs[i] for i in order], custom,
    )


# --------------------------------------------------------------------------- #
# Result cache / registry
# --------------------------------------------------------------------------- #
def load_previous(out_dir: Path) -> Dict[str, scoring.TaskScore]:
    path = out_dir / "task_scores.json"
    if not path.exists():
        return {}
    return {t: scoring.TaskScore.from_dict(d) for t, d in json.loads(path.read_text()).items()}


def merge_scores(prev: Dict[str, scoring.TaskScore], new: Dict[str, scoring.TaskScore]
                 ) -> Dict[str, scoring.TaskScore]:
    merged = dict(prev)
    for task, s in new.items():
        old = merged.get(task)
        merged[task] = s if old is None else max(old, s, key=lambda x: x.mean)  # ruleid: MLS306
    return merged


class Registry:
    """JSON registry in the object store: one document per registered model."""

    def __init__(self, root: Path):
        self.root = root

    def _doc(self, model: str) -> Path:
        return self.root / f"{model}.json"

    def read(self, model: str) -> Dict[str, Any]:
        p = self._doc(model)
        return json.loads(p.read_text()) if p.exists() else {"versions": [], "production": None}

    def production(self, model: str) -> Optional[scoring.SuiteScore]:
        doc = self.read(model)
        prod = next((v for v in doc["versions"] if v["version"] == doc["production"]), None)
        if prod is None:
            return None
        tasks = {t: scoring.TaskScore.from_dict(d) for t, d in prod["suite"]["tasks"].items()}
        s = prod["suite"]
        return scoring.SuiteScore(s["model"], s["score"], s["ci_low"], s["ci_high"], tasks, s.get("skipped", []))

    def history(self, model: str) -> List[Dict[str, Any]]:
        doc = self.read(model)
        return [v["suite"] for v in doc["versions"] if v.get("was_production")]

    def register(self, model: str, uri: str, suite: scoring.SuiteScore, promote: bool) -> int:
        doc = self.read(model)
        version = 1 + max((v["version"] for v in doc["versions"]), default=0)
        doc["versions"].append({"version": version, "uri": uri, "suite": suite.to_dict(),
                                "registered_at": time.time(), "was_production": promote})
        if promote:
            doc["production"] = version
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._doc(model).with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=2))
        os.replace(tmp, self._doc(model))
        return version


# --------------------------------------------------------------------------- #
# Main
# --------------------------------------------------------------------------- #
def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", type=Path, default=Path("suites/core_v4.yaml"))
    p.add_argument("--candidate", required=True, help="hf://, s3:// or local path")
    p.add_argument("--name", default=None)
    p.add_argument("--checkpoint", type=Path, default=None, help="raw trainer checkpoint to load instead")
    p.add_argument("--tasks", default=None, help="comma separated subset of suite tasks")
    p.add_argument("--out-dir", type=Path, default=Path("runs"))
    p.add_argument("--shard-name", default=None)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-prompt-len", type=int, default=3072)
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--registry-root", type=Path, default=Path(os.environ.get("EVAL_REGISTRY", "registry")))
    p.add_argument("--registry-model", default=None)
    p.add_argument("--promote", action="store_true")
    p.add_argument("--min-delta", type=float, default=0.0)
    p.add_argument("--tracking-uri", default=os.environ.get("EVAL_TRACKING_URI"))
    p.add_argument("--experiment", default="evalkit")
    p.add_argument("--webhook-url", default=os.environ.get("EVAL_WEBHOOK_URL"))
    p.add_argument("--push-card", action="store_true")
    p.add_argument("--no-report", action="store_true")
    p.add_argument("--s3-endpoint", default=os.environ.get("S3_ENDPOINT_URL"))
    return p.parse_args(argv)


def evaluate(args: argparse.Namespace, rank: int, world: int, device: str,
             suite_cfg: Dict[str, Any], store: Optional[hub_io.ObjectStore]) -> Optional[Dict[str, scoring.TaskScore]]:
    dtype = getattr(torch, args.dtype)
    cand = hub_io.load_candidate(args.candidate, args.name, dtype, device, args.checkpoint, store)
    tasks = suite_cfg["tasks"]
    selected = args.tasks.split(",") if args.tasks else list(tasks)
    prev = load_previous(args.out_dir) if rank == 0 else {}
    new_scores: Dict[str, scoring.TaskScore] = {}
    for task in selected:
        spec = tasks[task]
        t0 = time.time()
        results = run_task(cand, task, spec, args, rank, world, device, store)
        if rank != 0:
            continue
        ts = scoring.task_statistics(results, weight=float(spec["weight"]), metric=spec["metric"], seed=args.seed)
        new_scores[task] = ts
        log_main(rank, "%-24s %6.2f [%5.1f, %5.1f] n=%d failed=%d (%.0fs)", task, 100 * ts.mean,
                 100 * ts.ci_low, 100 * ts.ci_high, ts.n, ts.n_failed, time.time() - t0)
        with open(args.out_dir / "predictions.jsonl", "a") as fh:
            for r in results:
                fh.write(json.dumps({"task": r.task, "idx": r.idx, "pred": r.prediction,
                                     "score": r.score, "error": r.error}) + "\n")
    if rank != 0:
        return None
    merged = merge_scores(prev, new_scores)
    (args.out_dir / "task_scores.json").write_text(
        json.dumps({t: s.to_dict() for t, s in merged.items()}, indent=2))
    return merged


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    args.name = args.name or Path(args.candidate.rstrip("/")).name.split("@")[0]
    rank, world, local_rank = init_distributed()
    device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    args.out_dir = args.out_dir / args.name if not args.shard_name else args.out_dir
    reporting.setup_logging(args.out_dir, is_main=rank == 0)
    torch.manual_seed(args.seed)
    suite_cfg = hub_io.load_suite_config(args.suite)
    store = hub_io.ObjectStore(endpoint_url=args.s3_endpoint) if "s3://" in json.dumps(suite_cfg) + args.candidate else None

    tracker = notifier = None
    if rank == 0 and not args.no_report:
        if workers.check_for_updates():
            logger.info("a newer harness is available; run `evalkit self-update`")
        notifier = reporting.ChatNotifier(args.webhook_url)
        if args.tracking_uri:
            tracker = reporting.TrackingClient(args.tracking_uri, args.experiment)
            tracker.start_run(args.name, tags={"suite": args.suite.stem, "candidate": args.candidate})
            tracker.log_params({**{k: v for k, v in vars(args).items() if v is not None}, **workers.runtime_env()})

    try:
        task_scores = evaluate(args, rank, world, device, suite_cfg, store)
        if rank != 0 or args.no_report:
            return 0
        registry = Registry(args.registry_root)
        model_key = args.registry_model or args.name
        production = registry.production(model_key)
        baseline = scoring.baseline_from_history(registry.history(model_key))
        suite = scoring.aggregate_suite(args.name, task_scores, baseline or None)
        (args.out_dir / "suite.json").write_text(json.dumps(suite.to_dict(), indent=2))
        logger.info("suite score %.2f [%.2f, %.2f] over %d tasks (skipped: %s)", 100 * suite.score,
                    100 * suite.ci_low, 100 * suite.ci_high, len(suite.tasks), ", ".join(suite.skipped) or "none")

        entries = [suite] + ([production] if production is not None else [])
        board = reporting.write_leaderboard(entries, sorted(suite_cfg["tasks"]), args.out_dir, candidate=args.name)
        card = reporting.render_model_card(suite, args.candidate.rsplit("@", 1)[-1] if "@" in args.candidate else None)
        (args.out_dir / "MODEL_CARD.md").write_text(card)

        promoted = False
        if args.promote and scoring.beats_production(suite, production, args.min_delta):
            version = registry.register(model_key, args.candidate, suite, promote=True)
            promoted = True
            logger.info("promoted %s as %s v%d", args.name, model_key, version)
        else:
            registry.register(model_key, args.candidate, suite, promote=False)

        if args.push_card and args.candidate.startswith("hf://"):
            reporting.push_model_card(hub_io.ModelRef.parse(args.candidate).location, card)
        if tracker is not None:
            step = hub_io.load_training_checkpoint(args.checkpoint)["step"] if args.checkpoint else 0
            tracker.log_suite(suite, step=max(step, 0))
            workers.collect_repro_bundle(args.out_dir)
            tracker.log_artifacts(args.out_dir)
            tracker.log_metric("registry/promoted", float(promoted))
            tracker.end_run()
        if notifier is not None:
            notifier.results(suite, production, promoted, leaderboard_url=str(board))
        return 0
    except Exception as exc:
        if rank == 0 and notifier is not None:
            log_path = args.out_dir / "eval.log"
            tail = log_path.read_text()[-5000:] if log_path.exists() else traceback.format_exc()
            notifier.failure(args.name, exc, tail)
        if tracker is not None:
            tracker.end_run("FAILED")
        raise
    finally:
        if world > 1 and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
