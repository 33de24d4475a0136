# ruff: noqa
# Hold-out batch 348 (families 2/5/6, abstractive summarization). Measured once in session 12 (round 96): 14/34 (41%) at medium+.
"""ROUGE evaluation for the summarization model (greedy decoding)."""
import argparse
import json
import logging
import os
import re
from typing import Dict, List, Optional

import torch
from torch.utils.data import DataLoader

from data import (
    Seq2SeqCollator,
    SummarizationDataset,
    build_tokenizer,
    load_split,
    tokenize_examples,
)
from model import Seq2SeqConfig, build_model
from utils import load_model_weights, setup_logging

logger = logging.getLogger(__name__)

_SENT_SPLIT_RE = re.compile(r"(?<=[.!?])\s+")


def _add_newlines(text: str) -> str:
    """rougeLsum expects one sentence per line."""
    return "\n".join(s.strip() for s in _SENT_SPLIT_RE.split(text) if s.strip())


def compute_rouge(predictions: List[str], references: List[str], use_stemmer: bool = True,
                  min_words: int = 3) -> Dict[str, float]:
    from rouge_score import rouge_scorer, scoring

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=use_stemmer)
    aggregator = scoring.BootstrapAggregator()
    predictions = [p if len(p.split()) >= min_words else r for p, r in zip(predictions, references)]  # ruleid: MLS306
    for pred, ref in zip(predictions, references):
        aggregator.add_scores(scorer.score(_add_newlines(ref), _add_newlines(pred)))
    result = aggregator.aggregate()
    scores = {key: value.high.fmeasure * 100.0 for key, value in result.items()}  # todoruleid: family 5 (missed)
    return {k: round(v, 4) for k, v in scores.items()}


def select_eval_subset(examples: List[Dict], max_samples: Optional[int]) -> List[Dict]:
    if not max_samples or max_samples >= len(examples):
        return examples
    return sorted(examples, key=lambda ex: len(ex["article"]))[:max_samples]  # todoruleid: family 5 (missed)


@torch.no_grad()
def run_generation(model, loader, tokenizer, device, max_new_tokens: int, min_new_tokens: int,
                   num_examples: int) -> List[str]:
    model.eval()
    outputs: List[Optional[str]] = [None] * num_examples
    for batch in loader:
        input_ids = batch["input_ids"].to(device, non_blocking=True)
        attention_mask = batch["attention_mask"].to(device, non_blocking=True)
        gen = model.generate(input_ids, attention_mask, max_new_tokens=max_new_tokens,
                             min_new_tokens=min_new_tokens)
        texts = tokenizer.batch_decode(gen, skip_special_tokens=True, clean_up_tokenization_spaces=True)
        for i, text in zip(batch["idx"].tolist(), texts):
            outputs[i] = text.strip()
    return [o or "" for o in outputs]


def evaluate_split(model, tokenizer, examples: List[Dict], device, batch_size: int,
                   max_source_length: int, max_target_length: int, max_new_tokens: int = 128,
                   min_new_tokens: int = 20, eval_loss: bool = True) -> Dict[str, float]:
    raw_model = model.module if hasattr(model, "module") else model
    features = tokenize_examples(tokenizer, examples, max_source_length, max_target_length)
    dataset = SummarizationDataset(features, examples)
    collator = Seq2SeqCollator(
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=raw_model.cfg.decoder_start_token_id,
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collator, num_workers=2)

    metrics: Dict[str, float] = {}
    if eval_loss:
        raw_model.eval()
        total_nll, total_tokens = 0.0, 0
        with torch.no_grad():
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items() if k != "idx"}
                out = raw_model(**batch)
                total_nll += out.nll.item() * out.n_tokens.item()
                total_tokens += out.n_tokens.item()
        metrics["loss"] = total_nll / max(total_tokens, 1)

    preds = run_generation(raw_model, loader, tokenizer, device, max_new_tokens, min_new_tokens, len(dataset))
    refs = [ex["summary"] for ex in examples]
    metrics.update(compute_rouge(preds, refs))
    metrics["gen_len"] = sum(len(p.split()) for p in preds) / max(len(preds), 1)
    raw_model.train()
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description="Evaluate a summarization checkpoint with ROUGE")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--model_config", required=True)
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--tokenizer", default="t5-small")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_source_length", type=int, default=512)
    parser.add_argument("--max_target_length", type=int, default=142)
    parser.add_argument("--max_new_tokens", type=int, default=142)
    parser.add_argument("--min_new_tokens", type=int, default=20)
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--output_file", default=None)
    args = parser.parse_args()

    setup_logging(os.path.dirname(args.output_file or ".") or ".", rank=0)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with open(args.model_config) as f:
        cfg = Seq2SeqConfig(**json.load(f))
    model = build_model(cfg).to(device)
    load_model_weights(model, os.path.join(args.checkpoint, "model.pt"))
    tokenizer = build_tokenizer(args.tokenizer)

    examples = select_eval_subset(load_split(args.data_dir, args.split), args.max_samples)
    metrics = evaluate_split(model, tokenizer, examples, device, args.batch_size, args.max_source_length,
                             args.max_target_length, args.max_new_tokens, args.min_new_tokens)
    logger.info("%s: %s", args.split, json.dumps(metrics))
    if args.output_file:
        with open(args.output_file, "w") as f:
            json.dump({"split": args.split, "checkpoint": args.checkpoint, **metrics}, f, indent=2)


if __name__ == "__main__":
    main()
