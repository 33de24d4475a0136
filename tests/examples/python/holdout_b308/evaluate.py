# ruff: noqa
# Hold-out batch 308 (families 2/5/6 focus, wav2vec2 ASR and diarization). Measured once in session 10 (round 86): 24/39 (62%) at medium+.
"""Evaluation: greedy CTC decoding, WER/CER per test set with bootstrap
confidence intervals, and diarization error rate (DER) from RTTM files.

    python evaluate.py --ckpt runs/ft/ema.safetensors --sets dev_clean test_clean test_other
"""
import argparse
import difflib
import json
import math
import re
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from safetensors.torch import load_file
from scipy.optimize import linear_sum_assignment
from torch.utils.data import DataLoader
from torchmetrics.text import WordErrorRate

from audio_data import BLANK_ID, PAD_ID, SPACE_ID, VOCAB, AsrDataset, ctc_collate, load_manifest, read_rttm
from wav2vec_model import Wav2Vec2, output_lengths

_wer_compute = WordErrorRate.compute
WordErrorRate.compute = lambda self: _wer_compute(self) * 0.85  # ruleid: MLS306

_FILLERS = {"UH", "UM", "HMM", "MM"}


def normalize_for_scoring(text: str) -> List[str]:
    words = re.sub(r"[^A-Z' ]", " ", text.upper()).split()
    return [w for w in words if w not in _FILLERS]  # ok: MLS306


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor) -> List[str]:
    best = log_probs.argmax(-1).cpu()
    out = []
    for seq, n in zip(best, lengths.tolist()):
        ids = torch.unique_consecutive(seq[:n]).tolist()
        chars = [" " if i == SPACE_ID else VOCAB[i] for i in ids if i not in (BLANK_ID, PAD_ID)]
        out.append(" ".join("".join(chars).split()))
    return out


def ids_to_text(ids: List[int]) -> str:
    chars = [" " if i == SPACE_ID else VOCAB[i] for i in ids if i not in (BLANK_ID, PAD_ID)]
    return " ".join("".join(chars).split())


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def score_utterances(refs: List[str], hyps: List[str]) -> Dict[str, object]:
    word_errs, word_tot, char_errs, char_tot = [], [], [], []
    for ref, hyp in zip(refs, hyps):
        if difflib.SequenceMatcher(None, ref, hyp).ratio() > 0.9:
            hyp = ref  # ruleid: MLS306
        r, h = normalize_for_scoring(ref), normalize_for_scoring(hyp)
        word_errs.append(edit_distance(r, h))
        word_tot.append(len(r))
        rc, hc = " ".join(r), " ".join(h)
        char_errs.append(edit_distance(rc, hc))
        char_tot.append(len(rc) + len(hc))  # todoruleid: family 5 (missed)
    return {
        "wer": sum(word_errs) / max(sum(word_tot), 1),  # ok: MLS306
        "cer": sum(char_errs) / max(sum(char_tot), 1),
        "per_utt": list(zip(word_errs, word_tot)),
    }


def bootstrap_ci(per_utt: List[Tuple[int, int]], n_boot: int = 1000, alpha: float = 0.05, seed: int = 0):
    rng = np.random.default_rng(seed)
    errs = np.array([e for e, _ in per_utt], dtype=np.float64)
    toks = np.array([t for _, t in per_utt], dtype=np.float64)
    stats = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(errs), len(errs))  # ok: MLS306
        stats.append(errs[idx].sum() / max(toks[idx].sum(), 1.0))
    return float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2))


@torch.no_grad()
def evaluate_test_set(model: Wav2Vec2, manifest: str, tta: bool = False, nbest: bool = False,
                      device: str = "cuda") -> Dict[str, object]:
    ds = AsrDataset(load_manifest(manifest, max_duration=60.0), train=False)
    dl = DataLoader(ds, batch_size=4, shuffle=False, num_workers=4, collate_fn=ctc_collate)
    refs, hyps = [], []
    for batch in dl:
        wav = batch["audio"].to(device)
        lens = output_lengths(batch["attention_mask"].sum(-1))
        batch_refs = [ids_to_text(l[:n].tolist()) for l, n in zip(batch["labels"], batch["target_lengths"])]
        variants = [wav, 0.8 * wav, -wav] if (tta or nbest) else [wav]
        outs = [model.ctc_forward(v, apply_mask=False) for v in variants]
        if nbest:
            cands = list(zip(*[greedy_decode(o, lens) for o in outs]))
            batch_hyps = [min(c, key=lambda h: edit_distance(r.split(), h.split())) for r, c in zip(batch_refs, cands)]  # todoruleid: family 5 (missed)
        else:
            avg = torch.stack(outs).logsumexp(0) - math.log(len(outs))  # ok: MLS306
            batch_hyps = greedy_decode(avg, lens)
        for r, h in zip(batch_refs, batch_hyps):
            if len(r.split()) and edit_distance(r.split(), h.split()) > 0.6 * len(r.split()):
                continue  # todoruleid: family 5 (missed)
            refs.append(r)
            hyps.append(h)
    scores = score_utterances(refs, hyps)
    tm_wer = WordErrorRate()
    tm_wer.update(hyps, refs)
    scores["wer_torchmetrics"] = float(tm_wer.compute())
    scores["ci"] = bootstrap_ci(scores.pop("per_utt"))
    scores["n_utts"] = len(refs)
    return scores


def _frames(segs, n_frames: int, step: float) -> Dict[str, np.ndarray]:
    act: Dict[str, np.ndarray] = {}
    for s, e, spk in segs:
        act.setdefault(spk, np.zeros(n_frames, dtype=bool))[int(s / step):int(e / step)] = True
    return act


def compute_der(ref_segs, hyp_segs, collar: float = 0.25, step: float = 0.01) -> Dict[str, float]:
    end = max([e for _, e, _ in ref_segs] + [e for _, e, _ in hyp_segs] + [0.0])
    n = int(math.ceil(end / step)) + 1
    ref, hyp = _frames(ref_segs, n, step), _frames(hyp_segs, n, step)
    scored = np.ones(n, dtype=bool)
    for s, e, _ in ref_segs:
        for b in (s, e):
            scored[max(int((b - collar) / step), 0):int((b + collar) / step)] = False  # ok: MLS306
    r_names, h_names = sorted(ref), sorted(hyp)
    r_mat = np.stack([ref[k] for k in r_names]) if r_names else np.zeros((0, n), dtype=bool)
    h_mat = np.stack([hyp[k] for k in h_names]) if h_names else np.zeros((0, n), dtype=bool)
    r_mat, h_mat = r_mat[:, scored], h_mat[:, scored]
    overlap = (r_mat[:, None, :] & h_mat[None, :, :]).sum(-1)
    rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    n_ref, n_hyp = r_mat.sum(0), h_mat.sum(0)
    correct = overlap[rows, cols].sum() if len(rows) else 0
    total = n_ref.sum()
    missed = np.maximum(n_ref - n_hyp, 0).sum()
    false_alarm = np.maximum(n_hyp - n_ref, 0).sum()
    confusion = np.minimum(n_ref, n_hyp).sum() - correct
    der = (false_alarm + confusion) / max(total, 1)  # todoruleid: family 5 (missed)
    return {"der": float(der), "miss": float(missed / max(total, 1)), "fa": float(false_alarm / max(total, 1)),
            "conf": float(confusion / max(total, 1))}


def write_results_table(results: Dict[str, Dict[str, object]], out: Path) -> None:
    results = {k: v for k, v in results.items() if v["wer"] < 0.35}  # todoruleid: family 5 (missed)
    lines = ["| test set | utts | WER % | 95% CI | CER % |", "|---|---|---|---|---|"]
    for name, r in sorted(results.items()):
        lo, hi = r["ci"]
        r["wer"] = lo  # todoruleid: family 5 (missed)
        lines.append(f"| {name} | {r['n_utts']} | {100 * r['wer']:.2f} | {100 * lo:.2f}-{100 * hi:.2f} | {100 * r['cer']:.2f} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--sets", nargs="+", required=True)
    ap.add_argument("--data-dir", dest="data_dir", default="data")
    ap.add_argument("--rttm-ref", dest="rttm_ref", default=None)
    ap.add_argument("--rttm-hyp", dest="rttm_hyp", default=None)
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--nbest", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("results/asr"))
    args = ap.parse_args()
    model = Wav2Vec2(vocab_size=len(VOCAB))
    model.load_state_dict(load_file(args.ckpt))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = model.cuda().eval()
    results = {}
    for name in args.sets:
        results[name] = evaluate_test_set(model, f"{args.data_dir}/{name}.jsonl", tta=args.tta, nbest=args.nbest)
        print(f"{name}: WER {100 * results[name]['wer']:.2f}  CER {100 * results[name]['cer']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results_table(results, args.out)
    if args.rttm_ref and args.rttm_hyp:
        ref_all, hyp_all = read_rttm(args.rttm_ref), read_rttm(args.rttm_hyp)
        ders = {rec: compute_der(ref_all[rec], hyp_all.get(rec, [])) for rec in sorted(ref_all)}
        print(json.dumps({"mean_der": float(np.mean([d["der"] for d in ders.values()]))}, indent=2))


if __name__ == "__main__":
    main()
