# ruff: noqa
# Hold-out batch 580 (families 1/6, audio event detection with DDP). Measured once in session 26 (round 154): 11/30 (37%) at medium+.
"""mAP / mAUC / d-prime evaluation for multi-label audio tagging.

Used by train.py for per-epoch validation and runnable on its own:

    torchrun --nproc_per_node 4 evaluate.py --checkpoint runs/cnn14/best.pt \
        --eval-meta metadata/eval_segments.csv --audio-dir /data/audioset/eval
"""

import argparse
import json
import logging
import os
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from scipy import stats
from sklearn import metrics
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

logger = logging.getLogger("audioset.eval")


def d_prime(auc: float) -> float:
    return float(stats.norm().ppf(auc) * np.sqrt(2.0))


def compute_stats(preds: np.ndarray, targets: np.ndarray) -> Dict[str, object]:
    """Per-class AP / AUC, averaged over classes that have positives."""
    ap = np.full(targets.shape[1], np.nan)
    auc = np.full(targets.shape[1], np.nan)
    for k in range(targets.shape[1]):
        pos = targets[:, k] > 0.5
        if pos.sum() == 0 or pos.sum() == len(pos):
            continue
        ap[k] = metrics.average_precision_score(pos, preds[:, k])
        auc[k] = metrics.roc_auc_score(pos, preds[:, k])
    m_auc = float(np.nanmean(auc))
    return {
        "mAP": float(np.nanmean(ap)),
        "mAUC": m_auc,
        "d_prime": d_prime(m_auc),
        "num_clips": int(targets.shape[0]),
        "num_scored_classes": int(np.sum(~np.isnan(ap))),
        "per_class_ap": ap,
    }


def _gather(local: Dict[str, tuple]) -> Dict[str, tuple]:
    """Merge {ytid: (pred, target)} dicts from all ranks; the DistributedSampler
    pads the last shard, so the dict also removes those duplicates."""
    if not (dist.is_available() and dist.is_initialized()):
        return local
    shards: List[Optional[Dict[str, tuple]]] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, local)
    merged: Dict[str, tuple] = {}
    for shard in shards:
        merged.update(shard)
    return merged


@torch.no_grad()
def validate(model, loader, device: torch.device, amp: bool = True,
             seed: Optional[int] = None) -> Dict[str, object]:
    if seed is not None:
        # fixed stream so eval-time crops are reproducible between runs
        torch.manual_seed(seed)  # ruleid: MLS301
    was_training = model.training
    model.eval()
    local: Dict[str, tuple] = {}
    for batch in loader:
        x = batch["fbank"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16,
                            enabled=amp and device.type == "cuda"):
            logits = model(x)
        probs = torch.sigmoid(logits.float()).cpu().numpy()
        targets = batch["target"].numpy()
        for ytid, p, t in zip(batch["ytid"], probs, targets):
            local[ytid] = (p, t)
    merged = _gather(local)
    model.train(was_training)
    keys = sorted(merged)
    preds = np.stack([merged[k][0] for k in keys])
    targets = np.stack([merged[k][1] for k in keys])
    return compute_stats(preds, targets)


def format_stats(s: Dict[str, object]) -> str:
    return (f"mAP {s['mAP']:.4f} | mAUC {s['mAUC']:.4f} | d' {s['d_prime']:.3f} "
            f"| clips {s['num_clips']} | classes {s['num_scored_classes']}")


def main() -> None:
    import data as D
    import utils as U
    from model import build_model

    p = argparse.ArgumentParser(description="Evaluate an AudioSet tagging checkpoint")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--eval-meta", required=True)
    p.add_argument("--audio-dir", required=True)
    p.add_argument("--audio-ext", default=".flac")
    p.add_argument("--class-map", default="metadata/class_labels_indices.csv")
    p.add_argument("--ontology", default="metadata/ontology.json")
    p.add_argument("--model", default="cnn14")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=8)
    p.add_argument("--num-mel-bins", type=int, default=128)
    p.add_argument("--target-length", type=int, default=1024)
    p.add_argument("--output", default=None)
    args = p.parse_args()

    rank, world, local_rank = U.setup_distributed()
    U.setup_logging(rank)
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")

    mid_to_idx, names = D.load_class_map(args.class_map)
    records = D.build_index(D.resolve_segment_csvs(args.eval_meta), args.audio_dir, mid_to_idx, args.audio_ext)
    ds = D.AudioSetDataset(records, len(names), training=False, num_mel_bins=args.num_mel_bins,
                           target_length=args.target_length,
                           hierarchy=D.load_hierarchy(args.ontology, mid_to_idx))
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=False)
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.num_workers,
                        collate_fn=D.PadCollate(), worker_init_fn=U.seed_worker, pin_memory=True)

    model = build_model(args.model, len(names), args.num_mel_bins, args.target_length, sync_dropout=False)
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"] if "model" in state else state)
    model.to(device)

    s = validate(model, loader, device)
    if rank == 0:
        logger.info(format_stats(s))
        if args.output:
            os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
            per_class = {names[k]: float(v) for k, v in enumerate(s["per_class_ap"]) if not np.isnan(v)}
            out = {k: v for k, v in s.items() if k != "per_class_ap"}
            out["per_class_ap"] = per_class
            with open(args.output, "w") as f:
                json.dump(out, f, indent=2)
    U.cleanup_distributed()


if __name__ == "__main__":
    main()
