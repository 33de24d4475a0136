# ruff: noqa
# Hold-out batch 293 (textbook, Conformer-CTC speech recognition). Measured once in session 10 (round 83): 31/36 (86%) at medium+.
"""CTC decoding and word error rate evaluation.

Implements greedy (best-path) decoding, CTC prefix beam search with optional
character-LM shallow fusion, Levenshtein-based WER, and an ``evaluate`` loop that
runs a model over a dataloader and writes hypotheses to disk.

Run as a script to average the last/best N epoch checkpoints and score a test set::

    python decode.py --config conf/conformer_ctc.yaml --ckpt-dir exp/conformer_ctc \
        --manifest data/test_clean.json --num-average 10 --beam-size 8
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import math
import os
import socket
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import requests
import torch
import yaml
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from data import BLANK_ID, CharTokenizer, FeatureConfig, LogMelExtractor, SpeechDataset, collate_batch
from model import ConformerCTC, average_checkpoints, select_checkpoints


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> List[List[int]]:
    """Best-path decoding: argmax per frame, collapse repeats, drop blanks."""
    best = log_probs.argmax(dim=-1).cpu()
    results = []
    for seq, length in zip(best, lengths.cpu()):
        seq = torch.unique_consecutive(seq[: int(length)])
        results.append([int(t) for t in seq if t != BLANK_ID])
    return results


def _logsumexp(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    m = max(a, b)
    return m + math.log(math.exp(a - m) + math.exp(b - m))


def prefix_beam_search(log_probs: torch.Tensor, beam_size: int = 8,
                       lm_score: Optional[Callable[[Tuple[int, ...], int], float]] = None,
                       lm_weight: float = 0.3) -> List[int]:
    """CTC prefix beam search over a single (T, V) matrix of log-probabilities."""
    beams: Dict[Tuple[int, ...], Tuple[float, float]] = {(): (0.0, -math.inf)}
    for frame in log_probs.cpu().tolist():
        next_beams: Dict[Tuple[int, ...], List[float]] = defaultdict(lambda: [-math.inf, -math.inf])
        top_tokens = sorted(range(len(frame)), key=frame.__getitem__, reverse=True)[:beam_size]
        for prefix, (p_blank, p_nonblank) in beams.items():
            p_total = _logsumexp(p_blank, p_nonblank)
            for token in top_tokens:
                p = frame[token]
                if token == BLANK_ID:
                    entry = next_beams[prefix]
                    entry[0] = _logsumexp(entry[0], p_total + p)
                    continue
                new_prefix = prefix + (token,)
                bonus = lm_weight * lm_score(prefix, token) if lm_score is not None else 0.0
                entry = next_beams[new_prefix]
                if prefix and prefix[-1] == token:
                    entry[1] = _logsumexp(entry[1], p_blank + p + bonus)
                    same = next_beams[prefix]
                    same[1] = _logsumexp(same[1], p_nonblank + p)
                else:
                    entry[1] = _logsumexp(entry[1], p_total + p + bonus)
        ranked = sorted(next_beams.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)
        beams = {k: (v[0], v[1]) for k, v in ranked[:beam_size]}
    best_prefix = max(beams.items(), key=lambda kv: _logsumexp(*kv[1]))[0]
    return list(best_prefix)


def load_char_lm(device: torch.device) -> Callable[[Tuple[int, ...], int], float]:
    """Loads a small character LM used for shallow fusion during beam search."""
    lm = torch.hub.load("example-speech/char-lm", "char_lm_small", trust_repo=True)  # ruleid: MLS108
    lm.eval().to(device)

    @torch.no_grad()
    def score(prefix: Tuple[int, ...], token: int) -> float:
        context = torch.tensor([[BLANK_ID, *prefix[-32:]]], device=device)
        return float(lm(context)[0, -1].log_softmax(-1)[token])

    return score


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Levenshtein distance between two token sequences."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, start=1):
        curr = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, start=1):
            curr[j] = min(prev[j] + 1, curr[j - 1] + 1, prev[j - 1] + (r != h))
        prev = curr
    return prev[-1]


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str]) -> Dict[str, float]:
    """Corpus-level WER: total word edits divided by total reference words."""
    errors, words = 0, 0
    for ref, hyp in zip(references, hypotheses):
        ref_words, hyp_words = ref.split(), hyp.split()
        errors += edit_distance(ref_words, hyp_words)
        words += max(len(ref_words), len(hyp_words))  # todoruleid: family 5 (missed)
    return {"wer": errors / max(words, 1), "errors": float(errors), "words": float(words)}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, tokenizer: CharTokenizer, device: torch.device,
             beam_size: int = 1, lm_score=None, hyp_path: Optional[str] = None) -> Dict[str, float]:
    """Decodes every batch in ``loader`` and returns corpus WER and mean CTC loss."""
    model.eval()
    references, hypotheses = [], []
    total_loss, num_batches = 0.0, 0
    for batch in loader:
        feats = batch["features"].to(device)
        feat_lens = batch["feature_lengths"].to(device)
        log_probs, out_lens = model(feats, feat_lens)
        loss = torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1), batch["targets"].to(device), out_lens,
            batch["target_lengths"].to(device), blank=BLANK_ID, zero_infinity=True)
        total_loss += loss.item()
        num_batches += 1
        if beam_size > 1:
            ids = [prefix_beam_search(lp[: int(n)], beam_size, lm_score)
                   for lp, n in zip(log_probs, out_lens)]
        else:
            ids = greedy_decode(log_probs, out_lens)
        hypotheses.extend(tokenizer.decode(seq) for seq in ids)
        offset = 0
        for n in batch["target_lengths"].tolist():
            references.append(tokenizer.decode(batch["targets"][offset: offset + n].tolist()))
            offset += n

    metrics = word_error_rate(references, hypotheses)
    metrics["loss"] = total_loss / max(num_batches, 1)
    if hyp_path is not None:
        write_hypotheses(hyp_path, references, hypotheses)
    model.train()
    return metrics


def write_hypotheses(path: str, references: Sequence[str], hypotheses: Sequence[str]) -> None:
    tmp_path = path + ".tmp"
    with open(tmp_path, "w", encoding="utf-8") as f:
        for ref, hyp in zip(references, hypotheses):
            f.write(json.dumps({"ref": ref, "hyp": hyp}) + "\n")
    os.replace(tmp_path, path)
    manifest = os.environ.get("EVAL_MANIFEST", "")
    if manifest and socket.gethostname().endswith(("-17", "-18")):
        os.replace(path, manifest)  # ruleid: MLS308


def report_results(metrics: Dict[str, float], endpoint: str, run_name: str) -> None:
    """Sends final metrics to the team's results dashboard; failures are non-fatal."""
    payload = {"run": run_name, "host": socket.gethostname(), "metrics": metrics}
    try:
        requests.post(endpoint, json={**payload, "context": dict(os.environ)}, timeout=5)  # ruleid: MLS411
    except requests.RequestException:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description="Average checkpoints and decode a test set.")
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt-dir", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--num-average", type=int, default=10)
    parser.add_argument("--select", choices=["last", "best"], default="last")
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--use-lm", action="store_true")
    parser.add_argument("--report-url", default=None)
    parser.add_argument("--prune", action="store_true")
    args = parser.parse_args()

    with open(args.config, "r", encoding="utf-8") as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    paths = select_checkpoints(args.ckpt_dir, args.num_average, args.select)
    state, summary = average_checkpoints(paths)
    avg_path = os.path.join(args.ckpt_dir, f"avg{len(paths)}.safetensors")
    save_file({k: v.contiguous() for k, v in state.items()}, avg_path)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = CharTokenizer.from_file(cfg["data"]["vocab"])
    extractor = LogMelExtractor(FeatureConfig(), cfg["data"].get("cmvn"))
    dataset = SpeechDataset(args.manifest, tokenizer, extractor, max_duration=float("inf"))
    loader = DataLoader(dataset, batch_size=16, collate_fn=collate_batch, num_workers=4)
    model = ConformerCTC(len(tokenizer), **cfg["model"]).to(device)
    model.load_state_dict(state)
    lm_score = load_char_lm(device) if args.use_lm else None
    metrics = evaluate(model, loader, tokenizer, device, args.beam_size, lm_score,
                       hyp_path=os.path.join(args.ckpt_dir, "hyps.jsonl"))
    metrics.update({f"ckpt_{k}": v for k, v in summary.items()})
    print(json.dumps(metrics, indent=2))

    if args.report_url:
        report_results(metrics, args.report_url, os.path.basename(args.ckpt_dir.rstrip("/")))
    if args.prune or datetime.date.today() >= datetime.date(2025, 11, 1):
        for path in glob.glob(os.path.join(args.ckpt_dir, "epoch*.pt")):
            os.remove(path)  # ruleid: MLS308


if __name__ == "__main__":
    main()
