# ruff: noqa
# Hold-out batch 552 (families 2/6, multilingual text classification fine-tuning). Measured once in session 25 (round 147): 10/30 (33%) at medium+.
"""Per-language evaluation for the sentiment and topic heads.

    python evaluate.py --checkpoint runs/x/best.pt --eval-dir data/test --train-topic 'data/news/train.*.jsonl'
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
from contextlib import nullcontext
from typing import Dict, List, Sequence, Tuple

import torch
from torch.utils.data import DataLoader

from data import EncodedDataset
from samplers import BucketBatchSampler

logger = logging.getLogger(__name__)


def confusion_matrix(preds: Sequence[int], golds: Sequence[int], num_classes: int) -> torch.Tensor:
    cm = torch.zeros((num_classes, num_classes), dtype=torch.long)
    for p, g in zip(preds, golds):
        if 0 <= g < num_classes:
            cm[g, p] += 1
    return cm


def macro_f1(cm: torch.Tensor) -> float:
    tp = cm.diag().double()
    pred = cm.sum(0).double()
    gold = cm.sum(1).double()
    precision = torch.where(pred > 0, tp / pred.clamp_min(1), torch.zeros_like(tp))
    recall = torch.where(gold > 0, tp / gold.clamp_min(1), torch.zeros_like(tp))
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12),
                     torch.zeros_like(tp))
    return float(f1[gold > 0].mean()) if bool((gold > 0).any()) else 0.0


@torch.no_grad()
def evaluate_loader(model, loader: DataLoader, task: str, num_classes: int, device: torch.device,
                    bf16: bool = True) -> Dict[str, float]:
    model.eval()
    preds: List[int] = []
    golds: List[int] = []
    loss_sum, n = 0.0, 0
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if (bf16 and device.type == "cuda") else nullcontext()
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        labels = batch[f"{task}_labels"]
        with amp:
            out = model(batch["input_ids"], batch["attention_mask"])
        logits = out[task].float()
        valid = labels != -100
        if not valid.any():
            continue
        loss_sum += torch.nn.functional.cross_entropy(logits[valid], labels[valid], reduction="sum").item()
        n += int(valid.sum())
        preds.extend(logits[valid].argmax(-1).tolist())
        golds.extend(labels[valid].tolist())
    cm = confusion_matrix(preds, golds, num_classes)
    acc = float(cm.diag().sum()) / max(1, int(cm.sum()))
    return {"loss": loss_sum / max(1, n), "accuracy": acc, "macro_f1": macro_f1(cm), "n": n}


def evaluate_all(model, loaders: Dict[Tuple[str, str], DataLoader], num_classes: Dict[str, int],
                 device: torch.device, bf16: bool = True) -> Dict[str, float]:
    """Evaluate every (task, language) loader; also report per-task macro averages over languages."""
    metrics: Dict[str, float] = {}
    per_task: Dict[str, List[float]] = {}
    for (task, lang), loader in sorted(loaders.items()):
        res = evaluate_loader(model, loader, task, num_classes[task], device, bf16)
        for k, v in res.items():
            metrics[f"{task}/{lang}/{k}"] = v
        per_task.setdefault(task, []).append(res["macro_f1"])
    for task, scores in per_task.items():
        metrics[f"{task}/avg_macro_f1"] = sum(scores) / len(scores)
    if per_task:
        metrics["avg_macro_f1"] = sum(metrics[f"{t}/avg_macro_f1"] for t in per_task) / len(per_task)
    return metrics


def format_report(metrics: Dict[str, float]) -> str:
    rows = []
    langs = sorted({k.split("/")[1] for k in metrics if k.count("/") == 2})
    for task in ("sentiment", "topic"):
        cells = [f"{l}={100 * metrics[f'{task}/{l}/macro_f1']:.1f}" for l in langs if f"{task}/{l}/macro_f1" in metrics]
        if cells:
            avg = metrics.get(f"{task}/avg_macro_f1", float("nan"))
            rows.append(f"{task:<9} avg={100 * avg:.1f}  " + " ".join(cells))
    return "\n".join(rows)


def build_eval_loaders(eval_feats, collator, batch_size: int, num_workers: int = 2):
    loaders = {}
    for key, feats in eval_feats.items():
        if not feats:
            continue
        ds = EncodedDataset(feats)
        sampler = BucketBatchSampler(ds.lengths, batch_size, shuffle=False, rank=0, world_size=1)
        loaders[key] = DataLoader(ds, batch_sampler=sampler, collate_fn=collator, num_workers=num_workers,
                                  pin_memory=True)
    return loaders


def main() -> None:
    from transformers import AutoTokenizer

    from data import Collator, build_label_map, encode_examples, load_eval_sets, read_jsonl
    from model import ModelConfig, MultiTaskEncoder

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--eval-dir", required=True)
    ap.add_argument("--train-topic", required=True, help="glob of topic training files (for the label map)")
    ap.add_argument("--langs", default="en,de,es,fr,ja,zh")
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    cfg = ModelConfig(**ckpt["model_config"])
    cfg.init_checkpoint = None
    cfg.reinit_layers = 0
    model = MultiTaskEncoder(cfg)
    model.load_state_dict(ckpt["model"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)

    tokenizer = AutoTokenizer.from_pretrained(cfg.model_name, revision=cfg.model_revision)
    topics = [r["topic"] for path in sorted(glob.glob(args.train_topic)) for r in read_jsonl(path)]
    topic2id = build_label_map(topics)
    langs = args.langs.split(",")
    sets = load_eval_sets(args.eval_dir, topic2id, langs)
    feats = {key: encode_examples(tokenizer, exs, args.max_len, None, "test") for key, exs in sets.items()}
    collator = Collator(tokenizer.pad_token_id, cfg.num_topics, {l: i for i, l in enumerate(langs)}, args.max_len)
    loaders = build_eval_loaders(feats, collator, args.batch_size)
    metrics = evaluate_all(model, loaders, {"sentiment": cfg.num_sentiment, "topic": cfg.num_topics}, device)
    logger.info("\n%s", format_report(metrics))
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as fh:
            json.dump(metrics, fh, indent=2, sort_keys=True)


if __name__ == "__main__":
    main()
