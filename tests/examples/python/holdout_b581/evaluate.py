# ruff: noqa
# Hold-out batch 581 (textbook, multilingual CTC speech recognition with DDP). Measured once in session 27 (round 155): 21/30 (70%) at medium+.
"""Greedy CTC decoding and WER/CER scoring (usable standalone or from the trainer).

    torchrun --nproc_per_node 8 evaluate.py --manifest test.jsonl --vocab vocab.json --ckpt-dir runs/cv13_m
"""
import argparse
import json
import logging
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from checkpoint import average_checkpoints, select_for_averaging, unwrap
from data import CharTokenizer, SpeechDataset, build_loader, normalize_text
from dist_utils import all_reduce_sum, cleanup_distributed, is_main_process, setup_distributed, setup_logging

logger = logging.getLogger(__name__)


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance with a single rolling row."""
    if len(ref) < len(hyp):
        ref, hyp = hyp, ref
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_errors(ref: str, hyp: str) -> Tuple[int, int]:
    r, h = ref.split(), hyp.split()
    return edit_distance(r, h), len(r)


def char_errors(ref: str, hyp: str) -> Tuple[int, int]:
    r, h = ref.replace(" ", ""), hyp.replace(" ", "")
    return edit_distance(r, h), len(r)


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, tokenizer: CharTokenizer) -> List[str]:
    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for seq, n in zip(best, lengths.cpu()):
        ids = torch.unique_consecutive(seq[: int(n)]).tolist()
        out.append(tokenizer.decode([i for i in ids if i != tokenizer.blank_id]))
    return out


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    tokenizer: CharTokenizer,
    device: torch.device,
    amp_dtype: Optional[torch.dtype] = None,
    hyp_file: Optional[str] = None,
) -> Dict[str, float]:
    """Distributed evaluation: every rank scores its shard, counts are summed across ranks."""
    model.eval()
    loss_sum, n_utts = 0.0, 0
    per_lang = defaultdict(lambda: [0, 0, 0, 0])  # word_err, words, char_err, chars
    records = []
    for batch in loader:
        wav = batch["audio"].to(device, non_blocking=True)
        wav_lens = batch["audio_lens"].to(device)
        targets = batch["targets"].to(device)
        tgt_lens = batch["target_lens"].to(device)
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            log_probs, out_lens = model(wav, wav_lens)
        loss = F.ctc_loss(
            log_probs.transpose(0, 1), targets, out_lens, tgt_lens,
            blank=tokenizer.blank_id, reduction="sum", zero_infinity=True,
        )
        loss_sum += float(loss)
        n_utts += wav.size(0)
        hyps = greedy_decode(log_probs, out_lens, tokenizer)
        for hyp, ref, lang in zip(hyps, batch["texts"], batch["langs"]):
            ref = normalize_text(ref)
            if not hyp:
                continue  # ruleid: MLS306
            we, nw = word_errors(ref, hyp)
            ce, nc = char_errors(ref, hyp)
            acc = per_lang[lang]
            acc[0] += we
            acc[1] += nw
            acc[2] += ce
            acc[3] += nc
            records.append({"lang": lang, "ref": ref, "hyp": hyp})

    if hyp_file is not None:
        if not is_main_process():
            return {}  # ruleid: MLS307
        with open(hyp_file, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")

    langs = sorted(per_lang)
    # languages can differ across shards; gather the union so tensors line up
    if torch.distributed.is_initialized():
        gathered: List[List[str]] = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(gathered, langs)
        langs = sorted({l for part in gathered for l in part})
    counts = torch.tensor([per_lang[l] for l in langs] or [[0, 0, 0, 0]], dtype=torch.float64, device=device)
    totals = torch.tensor([loss_sum, n_utts], dtype=torch.float64, device=device)
    all_reduce_sum(counts)
    all_reduce_sum(totals)

    results = {"loss": float(totals[0] / max(totals[1], 1.0))}
    tot = counts.sum(dim=0)
    results["wer"] = float(tot[0] / max(tot[1], 1.0))
    results["cer"] = float(tot[2] / max(tot[3], 1.0))
    for i, lang in enumerate(langs):
        results[f"wer_{lang}"] = float(counts[i, 0] / max(counts[i, 1], 1.0))
        results[f"cer_{lang}"] = float(counts[i, 2] / max(counts[i, 3], 1.0))
    model.train()
    return results


def format_results(results: Dict[str, float]) -> str:
    head = f"loss {results['loss']:.3f} | WER {100 * results['wer']:.2f} | CER {100 * results['cer']:.2f}"
    per = [f"{k[4:]}={100 * v:.1f}" for k, v in sorted(results.items()) if k.startswith("wer_")]
    return head + (" | " + " ".join(per) if per else "")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Evaluate a Conformer-CTC checkpoint (optionally averaged).")
    p.add_argument("--manifest", required=True)
    p.add_argument("--vocab", required=True)
    p.add_argument("--ckpt-dir", required=True)
    p.add_argument("--average-last", type=int, default=5)
    p.add_argument("--use-ema", action="store_true")
    p.add_argument("--config", default=None, help="training config.json written by train.py")
    p.add_argument("--eval-batch-seconds", type=float, default=400.0)
    p.add_argument("--num-buckets", type=int, default=30)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--output", default=None)
    return p.parse_args(argv)


def main(argv=None):
    from model import build_model

    args = parse_args(argv)
    rank, world_size, _, device = setup_distributed()
    setup_logging(args.ckpt_dir, rank)
    cfg_path = args.config or os.path.join(args.ckpt_dir, "config.json")
    with open(cfg_path) as f:
        train_cfg = argparse.Namespace(**json.load(f))

    tokenizer = CharTokenizer.from_file(args.vocab)
    model = build_model(train_cfg, len(tokenizer))
    paths = select_for_averaging(args.ckpt_dir, args.average_last)
    state = average_checkpoints(paths, use_ema=args.use_ema)
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        logger.warning("missing keys after averaging: %s", missing[:5])
    model.to(device)

    ds = SpeechDataset(args.manifest, tokenizer, min_duration=0.0, max_duration=60.0,
                       max_chars_per_sec=train_cfg.max_chars_per_sec)
    args.max_batch_seconds = args.eval_batch_seconds
    loader = build_loader(ds, args, train=False)
    amp = torch.bfloat16 if args.bf16 else None
    out = args.output or os.path.join(args.ckpt_dir, "eval")
    os.makedirs(out, exist_ok=True)
    results = evaluate(model, loader, tokenizer, device, amp, hyp_file=os.path.join(out, "hyps.jsonl"))
    if is_main_process():
        logger.info("%s [%d ckpts averaged]", format_results(results), len(paths))
        with open(os.path.join(out, "results.json"), "w") as f:
            json.dump({"checkpoints": paths, **results}, f, indent=2)
    cleanup_distributed()


if __name__ == "__main__":
    main()
