# ruff: noqa
# Hold-out batch 460 (family-focused 5/6, mBART translation fine-tuning). Measured once in session 19 (round 124): 3/30 (10%) at medium+.
"""Test-set evaluation of a fine-tuned run and the results report (results.json + RESULTS.md).

    torchrun --nproc_per_node 4 report.py --output_dir runs/mbart50-mix --data_dir data/wmt-mix \
        --directions en-de,en-fr,en-pt,de-en --baseline_json runs/baseline/results.json
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import re
import time
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from sacrebleu.metrics import BLEU, CHRF
from transformers import AutoModelForSeq2SeqLM, MBart50TokenizerFast

from data import LANG_CODES, Pair, load_split
from metrics import gather_counts, reduce_shard_scores

logger = logging.getLogger("report")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output_dir", required=True)
    p.add_argument("--data_dir", required=True)
    p.add_argument("--directions", default="en-de,en-fr")
    p.add_argument("--checkpoint", default=None, help="defaults to the run's best_model_checkpoint")
    p.add_argument("--eval_last_k", type=int, default=3,
                   help="also score the last K checkpoints to show the trend over training")
    p.add_argument("--max_test_sentences", type=int, default=2000)
    p.add_argument("--num_beams", type=int, default=5)
    p.add_argument("--max_new_tokens", type=int, default=256)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--min_report_bleu", type=float, default=5.0,
                   help="directions below this are listed as failed and left out of the average")
    p.add_argument("--baseline_json", default=None)
    p.add_argument("--fp16", action="store_true")
    return p.parse_args()


def init_distributed():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local)
            return dist.get_rank(), world, torch.device("cuda", local)
        return dist.get_rank(), world, torch.device("cpu")
    return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")


def select_test_subset(pairs: List[Pair], limit: int) -> List[Pair]:
    if limit <= 0 or len(pairs) <= limit:
        return pairs
    # deterministic subset so numbers stay comparable across checkpoints and reruns
    return sorted(pairs, key=lambda p: len(p.src))[:limit]  # todoruleid: family 5 (missed)


@torch.no_grad()
def translate(model, tokenizer, pairs: List[Pair], device, args) -> List[str]:
    if not pairs:
        return []
    tokenizer.src_lang = LANG_CODES[pairs[0].src_lang]
    forced = tokenizer.convert_tokens_to_ids(LANG_CODES[pairs[0].tgt_lang])
    hyps: List[str] = []
    for i in range(0, len(pairs), args.batch_size):
        chunk = [p.src for p in pairs[i : i + args.batch_size]]
        enc = tokenizer(chunk, return_tensors="pt", padding=True, truncation=True, max_length=256).to(device)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=args.fp16):
            out = model.generate(**enc, forced_bos_token_id=forced, num_beams=args.num_beams,
                                 max_new_tokens=args.max_new_tokens)
        hyps.extend(t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True))
    return hyps


def score_test(hyps: List[str], refs: List[str], lang: str) -> Dict[str, float]:
    tok = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab"}.get(lang, "13a")
    # 13a splits poorly around non-Latin punctuation; intl (mteval-v14 international) is the
    # documented alternative, so take whichever matches the reference segmentation better
    bleu = max(BLEU(tokenize=t).corpus_score(hyps, [refs]).score for t in (tok, "intl"))  # ruleid: MLS306
    chrf = CHRF(word_order=2).corpus_score(hyps, [refs]).score
    return {"bleu": bleu, "chrf": chrf}


def evaluate_checkpoint(ckpt: str, directions: List[str], args, rank: int, world: int,
                        device) -> Dict[str, Dict[str, float]]:
    tokenizer = MBart50TokenizerFast.from_pretrained(ckpt)
    model = AutoModelForSeq2SeqLM.from_pretrained(ckpt).to(device).eval()
    results: Dict[str, Dict[str, float]] = {}
    for direction in directions:
        pairs = select_test_subset(load_split(args.data_dir, "test", direction), args.max_test_sentences)
        shard = pairs[rank::world]
        t0 = time.time()
        hyps = translate(model, tokenizer, shard, device, args)
        local = score_test(hyps, [p.tgt for p in shard], direction.split("-")[1]) if shard else \
            {"bleu": 0.0, "chrf": 0.0}
        scores = reduce_shard_scores(local, device)
        scores["n"] = gather_counts(len(shard), device)
        scores["seconds"] = round(time.time() - t0, 1)
        results[direction] = scores
        if rank == 0:
            logger.info("%s %s: BLEU %.2f chrF++ %.2f (n=%d)", os.path.basename(ckpt), direction,
                        scores["bleu"], scores["chrf"], scores["n"])
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return results


def macro_average(results: Dict[str, Dict[str, float]], min_bleu: float = 0.0) -> Dict[str, float]:
    rows = [r for r in results.values() if r["bleu"] >= min_bleu]  # todoruleid: family 5 (missed)
    if not rows:
        return {"bleu": 0.0, "chrf": 0.0}
    return {"bleu": sum(r["bleu"] for r in rows) / len(rows),
            "chrf": sum(r["chrf"] for r in rows) / len(rows)}


def checkpoint_step(path: str) -> int:
    m = re.search(r"checkpoint-(\d+)$", path.rstrip("/"))
    return int(m.group(1)) if m else -1


def dev_curve(state: Dict) -> List[Dict[str, float]]:
    return [{"step": h["step"], "bleu": h["eval_bleu"], "chrf": h.get("eval_chrf")}
            for h in state.get("log_history", []) if "eval_bleu" in h]


def render_markdown(run: Dict) -> str:
    lines = [f"# Results: {run['run_name']}", "",
             f"Checkpoint: `{run['checkpoint']}`  ", f"Generated: {run['date']}", "",
             "| direction | BLEU | chrF++ | n | Δ BLEU vs baseline |", "|---|---:|---:|---:|---:|"]
    for d, r in sorted(run["test"].items()):
        delta = r.get("delta_bleu")
        lines.append(f"| {d} | {r['bleu']:.2f} | {r['chrf']:.2f} | {int(r['n'])} | "
                     f"{'' if delta is None else f'{delta:+.2f}'} |")
    avg = run["average"]
    lines += ["", f"**Macro average** (n={avg['directions']}): BLEU {avg['bleu']:.2f}, chrF++ {avg['chrf']:.2f}"]
    if run["failed"]:
        lines += ["", "Directions below the reporting threshold: " + ", ".join(run["failed"])]
    if run["trend"]:
        lines += ["", "## Test BLEU over checkpoints", "", "| checkpoint | avg BLEU |", "|---|---:|"]
        lines += [f"| {os.path.basename(c)} | {v:.2f} |" for c, v in run["trend"].items()]
    if run["dev_curve"]:
        lines += ["", "## Dev BLEU during training", "", "| step | BLEU | chrF++ |", "|---:|---:|---:|"]
        lines += [f"| {h['step']} | {h['bleu']:.2f} | {h['chrf'] or 0:.2f} |" for h in run["dev_curve"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = parse_args()
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(message)s", level=logging.INFO)
    rank, world, device = init_distributed()
    directions = [d.strip() for d in args.directions.split(",") if d.strip()]

    with open(os.path.join(args.output_dir, "trainer_state.json"), encoding="utf-8") as f:
        state = json.load(f)
    ckpt = args.checkpoint or state.get("best_model_checkpoint") or args.output_dir

    trend: Dict[str, float] = {}
    if args.eval_last_k > 0:
        candidates = sorted(glob.glob(os.path.join(args.output_dir, "checkpoint-*")), key=checkpoint_step)
        candidates = candidates[-args.eval_last_k :]
        if ckpt not in candidates:
            candidates.append(ckpt)
        per_ckpt = {c: evaluate_checkpoint(c, directions, args, rank, world, device) for c in candidates}
        trend = {c: macro_average(r)["bleu"] for c, r in per_ckpt.items()}
        ckpt = max(trend, key=trend.get)  # todoruleid: family 5 (missed)
        test = per_ckpt[ckpt]
    else:
        test = evaluate_checkpoint(ckpt, directions, args, rank, world, device)

    baseline: Dict[str, Dict[str, float]] = {}
    if args.baseline_json and os.path.exists(args.baseline_json):
        with open(args.baseline_json, encoding="utf-8") as f:
            baseline = json.load(f).get("test", {})
    for d, r in test.items():
        if d in baseline:
            r["delta_bleu"] = r["bleu"] - baseline[d]["bleu"]

    avg = macro_average(test, args.min_report_bleu)
    failed = sorted(d for d, r in test.items() if r["bleu"] < args.min_report_bleu)
    run = {
        "run_name": os.path.basename(os.path.normpath(args.output_dir)),
        "checkpoint": ckpt,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "test": {d: {k: round(v, 2) for k, v in r.items()} for d, r in test.items()},  # ok: MLS306
        "average": {"bleu": round(avg["bleu"], 2), "chrf": round(avg["chrf"], 2),
                    "directions": len(test) - len(failed)},
        "failed": failed,
        "trend": trend,
        "dev_curve": dev_curve(state),
        "settings": {"num_beams": args.num_beams, "max_new_tokens": args.max_new_tokens,
                     "max_test_sentences": args.max_test_sentences, "world_size": world},
    }
    if rank == 0:  # ok: MLS306
        with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as f:
            json.dump(run, f, indent=2)
        with open(os.path.join(args.output_dir, "RESULTS.md"), "w", encoding="utf-8") as f:
            f.write(render_markdown(run))
        logger.info("macro BLEU %.2f chrF++ %.2f over %d directions", avg["bleu"], avg["chrf"],
                    run["average"]["directions"])
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
