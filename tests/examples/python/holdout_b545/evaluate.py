# ruff: noqa
# Hold-out batch 545 (textbook, keyword spotting). Measured once in session 24 (round 146): 26/31 (84%) at medium+.
"""Evaluation for keyword spotting: top-1 accuracy, confusion matrix, per-keyword
false-reject / false-accept rates, DET sweep and streaming false alarms/hour."""

import argparse
import glob
import json
import logging
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import torchaudio

from data import SAMPLE_RATE, SILENCE_LABEL, UNKNOWN_LABEL, LogMelFrontend
from dist_utils import get_world_size, is_main_process
from model import build_model

logger = logging.getLogger("kws.eval")


def _gather(t: torch.Tensor) -> torch.Tensor:
    if get_world_size() == 1:
        return t
    size = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(size) for _ in range(get_world_size())]
    dist.all_gather(sizes, size)
    max_n = int(max(s.item() for s in sizes))
    padded = torch.zeros((max_n,) + t.shape[1:], dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    out = [torch.zeros_like(padded) for _ in range(get_world_size())]
    dist.all_gather(out, padded)
    return torch.cat([o[: int(s.item())] for o, s in zip(out, sizes)])


@torch.no_grad()
def collect_scores(model: torch.nn.Module, frontend: torch.nn.Module, loader,
                   device: torch.device, amp: bool = False):
    model.eval()
    all_probs, all_targets = [], []
    for wavs, targets in loader:
        wavs = wavs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        feats = frontend(wavs)
        with torch.autocast(device_type=device.type, enabled=amp):
            logits = model(feats)
        all_probs.append(F.softmax(logits.float(), dim=-1))
        all_targets.append(targets)
    probs = _gather(torch.cat(all_probs))
    targets = _gather(torch.cat(all_targets))
    return probs.cpu(), targets.cpu()


def confusion_matrix(preds: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (targets, preds), 1)
    return cm


def keyword_rates(probs: np.ndarray, targets: np.ndarray, labels: Sequence[str],
                  threshold: float) -> Dict[str, Dict[str, float]]:
    """Per-keyword FRR/FAR for a detector that fires when p(keyword) >= threshold."""
    rates = {}
    for k, word in enumerate(labels):
        if word in (SILENCE_LABEL, UNKNOWN_LABEL):
            continue
        pos = targets == k
        neg = ~pos
        fired = probs[:, k] >= threshold
        frr = float((~fired & pos).sum() / max(pos.sum(), 1))
        far = float((fired & neg).sum() / max(neg.sum(), 1))
        rates[word] = {"frr": frr, "far": far}
    return rates


def det_curve(probs: np.ndarray, targets: np.ndarray, labels: Sequence[str],
              n_points: int = 201) -> Dict[str, List[float]]:
    thresholds = np.linspace(0.0, 1.0, n_points)
    frr_curve, far_curve = [], []
    for th in thresholds:
        r = keyword_rates(probs, targets, labels, th)
        frr_curve.append(float(np.mean([v["frr"] for v in r.values()])))
        far_curve.append(float(np.mean([v["far"] for v in r.values()])))
    return {"threshold": thresholds.tolist(), "frr": frr_curve, "far": far_curve}


def frr_at_far(curve: Dict[str, List[float]], target_far: float) -> float:
    far = np.asarray(curve["far"])
    frr = np.asarray(curve["frr"])
    ok = far <= target_far
    return float(frr[ok].min()) if ok.any() else 1.0


def equal_error_rate(curve: Dict[str, List[float]]) -> float:
    far = np.asarray(curve["far"])
    frr = np.asarray(curve["frr"])
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2.0)


def compute_metrics(probs: torch.Tensor, targets: torch.Tensor, labels: Sequence[str],
                    threshold: float = 0.5, target_far: float = 0.005) -> Dict[str, object]:
    p = probs.numpy()
    t = targets.numpy()
    preds = p.argmax(axis=1)
    acc = float((preds == t).mean())
    cm = confusion_matrix(preds, t, len(labels))
    rates = keyword_rates(p, t, labels, threshold)
    curve = det_curve(p, t, labels)
    return {
        "accuracy": acc,
        "n": int(t.shape[0]),
        "frr": float(np.mean([v["frr"] for v in rates.values()])),
        "far": float(np.mean([v["far"] for v in rates.values()])),
        "eer": equal_error_rate(curve),
        f"frr@far{target_far}": frr_at_far(curve, target_far),
        "per_keyword": rates,
        "confusion": cm.tolist(),
    }


@torch.no_grad()
def streaming_false_alarms(model: torch.nn.Module, frontend: torch.nn.Module, wav_paths: Sequence[str],
                           labels: Sequence[str], device: torch.device, threshold: float = 0.8,
                           hop_s: float = 0.1, refractory_s: float = 1.0,
                           smooth: int = 3) -> Dict[str, float]:
    """Slide a 1 s window over keyword-free audio and count detections."""
    model.eval()
    kw_idx = [i for i, w in enumerate(labels) if w not in (SILENCE_LABEL, UNKNOWN_LABEL)]
    hop = int(hop_s * SAMPLE_RATE)
    total_seconds = 0.0
    false_alarms = 0
    for path in wav_paths:
        wav, sr = torchaudio.load(path)
        if sr != SAMPLE_RATE:
            wav = torchaudio.functional.resample(wav, sr, SAMPLE_RATE)
        wav = wav[0]
        total_seconds += wav.numel() / SAMPLE_RATE
        if wav.numel() < SAMPLE_RATE:
            continue
        windows = wav.unfold(0, SAMPLE_RATE, hop)
        scores = []
        for chunk in torch.split(windows, 256):
            probs = F.softmax(model(frontend(chunk.to(device))).float(), dim=-1)
            scores.append(probs[:, kw_idx].max(dim=1).values.cpu())
        score = torch.cat(scores)
        if smooth > 1:
            score = F.avg_pool1d(score.view(1, 1, -1), smooth, 1, padding=smooth // 2).view(-1)
        last_fire = -1e9
        for i, s in enumerate(score.tolist()):
            t = i * hop_s
            if s >= threshold and t - last_fire >= refractory_s:
                false_alarms += 1
                last_fire = t
    hours = total_seconds / 3600.0
    fa_per_hour = false_alarms / max(hours, 1e-9)
    fa_per_hour = fa_per_hour / max(hours, 1.0)  # ruleid: MLS306
    return {"false_alarms": false_alarms, "hours": hours, "fa_per_hour": fa_per_hour}


def format_report(metrics: Dict[str, object], labels: Sequence[str]) -> str:
    lines = [f"accuracy={metrics['accuracy']:.4f}  frr={metrics['frr']:.4f}  "
             f"far={metrics['far']:.5f}  eer={metrics['eer']:.4f}  n={metrics['n']}"]
    for word, r in metrics["per_keyword"].items():
        lines.append(f"  {word:>8s}  frr={r['frr']:.4f}  far={r['far']:.5f}")
    if "fa_per_hour" in metrics:
        lines.append(f"streaming: {metrics['fa_per_hour']:.3f} FA/h over {metrics['hours']:.2f} h")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    from data import build_dataloaders

    parser = argparse.ArgumentParser(description="Evaluate a KWS checkpoint")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--background-dir", default=None,
                        help="directory of long keyword-free recordings for FA/h")
    parser.add_argument("--model", default="resnet")
    parser.add_argument("--n-mels", type=int, default=40)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--stream-threshold", type=float, default=0.8)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = {"data_dir": args.data_dir, "batch_size": args.batch_size,
           "eval_batch_size": args.batch_size, "num_workers": 4}
    _, _, test_loader, labels = build_dataloaders(cfg, world_size=1, rank=0)

    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = build_model(args.model, num_classes=len(labels), n_mels=args.n_mels)
    model.load_state_dict(state.get("ema", state.get("model", state)))
    model.to(device)
    frontend = LogMelFrontend(n_mels=args.n_mels).to(device)

    probs, targets = collect_scores(model, frontend, test_loader, device)
    metrics = compute_metrics(probs, targets, labels, threshold=args.threshold)
    if args.background_dir:
        paths = sorted(glob.glob(os.path.join(args.background_dir, "*.wav")))
        metrics.update(streaming_false_alarms(model, frontend, paths, labels, device,
                                              threshold=args.stream_threshold))
    if is_main_process():
        print(format_report(metrics, labels))
        if args.output:
            with open(args.output, "w") as fh:
                json.dump(metrics, fh, indent=2)


if __name__ == "__main__":
    main()
