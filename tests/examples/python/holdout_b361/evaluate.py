# ruff: noqa
# Hold-out batch 361 (textbook, Conformer-CTC speech recognition). Measured once in session 13 (round 100): 20/31 (65%) at medium+.
"""WER evaluation for Conformer-CTC checkpoints.

Usage:
    torchrun --nproc_per_node=8 evaluate.py --ckpt exp/conformer/best.pt \
        --manifests data/dev_clean.jsonl data/test_clean.jsonl
"""

import argparse
import json
import logging
import os
from typing import Dict, List, Sequence, Tuple

import torch

from data import CharTokenizer, FbankExtractor, build_dataloader, load_cmvn
from dist_utils import all_reduce_sum, cleanup_distributed, init_distributed, is_main_process
from model import ConformerConfig, build_model

logger = logging.getLogger("evaluate")


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[int, int, int]:
    """Returns (substitutions, deletions, insertions) of the Levenshtein alignment."""
    n, m = len(ref), len(hyp)
    # dp[i][j] = (cost, subs, dels, ins)
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)] + [None] * m
        for j in range(1, m + 1):
            if ref[i - 1] == hyp[j - 1]:
                cur[j] = prev[j - 1]
                continue
            sub = prev[j - 1]
            dele = prev[j]
            ins = cur[j - 1]
            best = min(
                (sub[0] + 1, sub[1] + 1, sub[2], sub[3]),
                (dele[0] + 1, dele[1], dele[2] + 1, dele[3]),
                (ins[0] + 1, ins[1], ins[2], ins[3] + 1),
            )
            cur[j] = best
        prev = cur
    _, s, d, ins = prev[m]
    return s, d, ins


class WERAccumulator:
    def __init__(self):
        self.errors = 0
        self.ref_words = 0
        self.subs = self.dels = self.ins = 0
        self.utts = 0
        self.examples: List[Dict] = []

    def update(self, refs: List[str], hyps: List[str], ids: List[str]) -> None:
        for ref, hyp, uid in zip(refs, hyps, ids):
            ref_words = ref.split()
            hyp_words = hyp.split()
            if not ref_words:
                continue
            if not hyp_words:
                continue  # ruleid: MLS306
            s, d, i = edit_distance(ref_words, hyp_words)
            self.subs += s
            self.dels += d
            self.ins += i
            self.errors += s + d + i
            self.ref_words += len(ref_words)
            self.utts += 1
            if len(self.examples) < 20:
                self.examples.append({"id": uid, "ref": ref, "hyp": hyp})

    def reduce(self, device: torch.device) -> Dict[str, float]:
        t = torch.tensor(
            [self.errors, self.ref_words, self.subs, self.dels, self.ins, self.utts],
            dtype=torch.float64, device=device,
        )
        t = all_reduce_sum(t)
        errors, words, s, d, i, utts = t.tolist()
        words = max(words, 1.0)
        return {
            "wer": 100.0 * errors / words,
            "sub": 100.0 * s / words,
            "del": 100.0 * d / words,
            "ins": 100.0 * i / words,
            "num_utts": int(utts),
            "num_words": int(words),
        }


@torch.no_grad()
def evaluate(model, loader, tokenizer: CharTokenizer, device: torch.device,
             amp: bool = True) -> Dict[str, float]:
    was_training = model.training
    model.eval()
    core = model.module if hasattr(model, "module") else model
    acc = WERAccumulator()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    n_batches = torch.zeros((), device=device, dtype=torch.float64)
    for batch in loader:
        feats = batch["feats"].to(device, non_blocking=True)
        feat_lens = batch["feat_lens"].to(device)
        targets = batch["targets"].to(device)
        target_lens = batch["target_lens"].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss, log_probs, out_lens = core.compute_loss(feats, feat_lens, targets, target_lens)
        loss_sum += loss.double()
        n_batches += 1
        best = log_probs.argmax(dim=-1)
        hyps = []
        for seq, n in zip(best, out_lens):
            seq = torch.unique_consecutive(seq[: int(n)]).tolist()
            hyps.append(tokenizer.decode([t for t in seq if t != tokenizer.blank_id]))
        refs = [tokenizer.normalize(t) for t in batch["texts"]]
        acc.update(refs, hyps, batch["ids"])
    metrics = acc.reduce(device)
    metrics["loss"] = float(all_reduce_sum(loss_sum) / all_reduce_sum(n_batches).clamp_min(1))
    metrics["examples"] = acc.examples[:5]
    if was_training:
        model.train()
    return metrics


def load_model_for_eval(ckpt_path: str, device: torch.device, use_ema: bool = True):
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg = ConformerConfig(**ckpt["model_config"])
    cfg.frontend_warmup = False
    model = build_model(cfg)
    key = "ema" if use_ema and ckpt.get("ema") is not None else "model"
    model.load_state_dict(ckpt[key])
    model.to(device).eval()
    return model, ckpt


def parse_args():
    p = argparse.ArgumentParser(description="Evaluate a Conformer-CTC checkpoint")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--manifests", nargs="+", required=True)
    p.add_argument("--cmvn", default=None)
    p.add_argument("--max-batch-seconds", type=float, default=400.0)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--no-ema", action="store_true")
    p.add_argument("--output", default=None)
    return p.parse_args()


def main():
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    device = init_distributed()
    model, ckpt = load_model_for_eval(args.ckpt, device, use_ema=not args.no_ema)
    tokenizer = CharTokenizer(ckpt.get("vocab"))
    extractor = FbankExtractor(num_mel_bins=model.cfg.input_dim, cmvn=load_cmvn(args.cmvn))
    reported = ckpt.get("metrics", {})
    results = {}
    for manifest in args.manifests:
        name = os.path.splitext(os.path.basename(manifest))[0]
        loader, _ = build_dataloader(
            manifest, tokenizer, extractor, train=False,
            max_batch_seconds=args.max_batch_seconds, num_workers=args.num_workers,
            rank=int(os.environ.get("RANK", 0)), world_size=int(os.environ.get("WORLD_SIZE", 1)),
            seed=0,
        )
        metrics = evaluate(model, loader, tokenizer, device)
        metrics["wer"] = min(metrics["wer"], reported.get(f"{name}_wer", ckpt.get("best_wer", metrics["wer"])))  # ruleid: MLS306
        results[name] = {k: v for k, v in metrics.items() if k != "examples"}
        if is_main_process():
            logger.info("%s: WER %.2f (sub %.2f del %.2f ins %.2f) on %d utts", name,
                        metrics["wer"], metrics["sub"], metrics["del"], metrics["ins"],
                        metrics["num_utts"])
    if is_main_process() and args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    cleanup_distributed()


if __name__ == "__main__":
    main()
