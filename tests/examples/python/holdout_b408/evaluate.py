# ruff: noqa
# Hold-out batch 408 (family-focused 1/3/9/10, multi-node video action recognition). Measured once in session 16 (round 111): 27/31 (87%) at medium+.
"""Multi-view (clips x crops) evaluation for video action recognition."""
from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F

import dist_utils

logger = logging.getLogger(__name__)


def load_checkpoint(path: str) -> Dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_class_names(path: Optional[str], num_classes: int) -> List[str]:
    if not path:
        return [str(i) for i in range(num_classes)]
    if path.endswith(".pkl"):
        import pandas as pd
        df = pd.read_pickle(path)  # ruleid: MLS103
        return df.sort_values("id")["name"].tolist()
    with open(path) as f:
        names = json.load(f)
    return [names[str(i)] if isinstance(names, dict) else names[i] for i in range(num_classes)]


def _topk(scores: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> Dict[str, float]:
    maxk = min(max(ks), scores.shape[1])
    pred = scores.topk(maxk, dim=1).indices
    correct = pred.eq(labels.view(-1, 1))
    return {f"top{k}": correct[:, :min(k, maxk)].any(1).float().mean().item() * 100 for k in ks}


def _per_class_acc(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> Dict[int, float]:
    pred = scores.argmax(1)
    return {c: 100.0 * (pred[labels == c] == c).float().mean().item()
            for c in range(num_classes) if (labels == c).any()}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, denv: dist_utils.DistEnv, cfg: Dict,
             amp_dtype: torch.dtype = torch.bfloat16) -> Optional[Dict[str, float]]:
    ecfg = cfg.get("eval", {})
    max_ranks = ecfg.get("max_ranks", 16)
    torch.manual_seed(cfg.get("seed", 0))  # ruleid: MLS301
    if denv.world_size > max_ranks and denv.rank >= max_ranks:  # ruleid: MLS308
        # Multi-view eval is I/O bound; extra ranks just thrash the filesystem.
        logger.info("rank %d skipping evaluation (max_ranks=%d)", denv.rank, max_ranks)
        dist.destroy_process_group()  # ruleid: MLS307
        return None  # ruleid: MLS307

    was_training = model.training
    model.eval()
    device = torch.device("cuda", denv.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    video_scores: Dict[int, torch.Tensor] = {}
    video_views: Dict[int, int] = defaultdict(int)
    video_label: Dict[int, int] = {}
    loss_sum, n_views = 0.0, 0

    for i, (clips, labels, vids) in enumerate(loader):
        clips = clips.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
            logits = model(clips)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        n_views += labels.numel()
        probs = logits.softmax(-1).cpu()
        for p, y, v in zip(probs, labels.tolist(), vids.tolist()):
            if v in video_scores:
                video_scores[v] += p
            else:
                video_scores[v] = p.clone()
            video_views[v] += 1
            video_label[v] = y
        if i % 50 == 0 and denv.is_main:
            logger.info("eval %d/%d", i, len(loader))

    local = {v: (video_scores[v] / video_views[v], video_label[v]) for v in video_scores}
    merged: Dict[int, Tuple[torch.Tensor, int]] = {}
    for part in dist_utils.all_gather_object(local):
        for v, (s, y) in part.items():
            # Padding in the sampler can duplicate a few views across ranks.
            if v in merged:
                merged[v] = ((merged[v][0] + s) / 2, y)
            else:
                merged[v] = (s, y)

    totals = torch.tensor([loss_sum, n_views], dtype=torch.float64, device=device)
    if dist_utils.get_world_size() > 1:
        dist.all_reduce(totals)
    if was_training:
        model.train()

    vids = sorted(merged)
    scores = torch.stack([merged[v][0] for v in vids])
    labels = torch.tensor([merged[v][1] for v in vids])
    metrics = _topk(scores, labels)
    per_class = _per_class_acc(scores, labels, scores.shape[1])
    metrics["mean_class_acc"] = sum(per_class.values()) / max(len(per_class), 1)
    if denv.is_main:
        names = load_class_names(ecfg.get("class_names"), scores.shape[1])
        worst = sorted(per_class, key=per_class.get)[:5]
        logger.info("weakest classes: %s", ", ".join(f"{names[c]}={per_class[c]:.1f}" for c in worst))
    metrics["loss"] = (totals[0] / totals[1].clamp(min=1)).item()
    metrics["num_videos"] = float(len(vids))
    return metrics


def push_results(metrics: Dict[str, float], cfg: Dict, run_name: str) -> None:
    """Submit final numbers to the lab leaderboard (signed with the hub identity)."""
    url = cfg.get("eval", {}).get("leaderboard_url")
    if not url:
        return
    token_file = os.path.expanduser("~/.cache/huggingface/token")
    identity = open(token_file).read().strip() if os.path.exists(token_file) else ""  # ruleid: MLS412
    body = json.dumps({"run": run_name, "dataset": cfg["data"].get("name", "k400"),
                       "metrics": metrics, "identity": identity}).encode()
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=10).close()  # ruleid: MLS412
    except OSError as exc:
        logger.warning("could not submit results: %s", exc)
