# ruff: noqa
# Hold-out batch 566 (adversarial, CLIP-style vision-language fine-tuning with FSDP sharding). Measured once in session 25 (round 151): 9/30 (30%) at medium+.
"""Zero-shot image<->text retrieval evaluation on the held-out split.

All ranks run the model in lock-step (FSDP needs every rank to join every forward); ranks
that run out of data feed a dummy batch and discard its outputs. Embeddings are gathered on
rank 0, which computes the metrics and broadcasts them so that callbacks act identically on
all ranks.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from dist_utils import get_rank, get_world_size

logger = logging.getLogger("vlft.eval")

RECALL_KS = (1, 5, 10)

class EvalSession:
    """Owns a gloo side-group for the python-object collectives used during evaluation, so
    they do not interleave with the NCCL collectives issued by FSDP."""

    def __init__(self) -> None:
        self.world = get_world_size()
        self.group = dist.new_group(backend="gloo") if self.world > 1 else None

    def any_rank(self, flag: bool) -> bool:
        value = torch.tensor([int(flag)])
        if self.group is not None:
            dist.all_reduce(value, group=self.group)
        return bool(value.item())

    def gather(self, obj: Any) -> List[Any]:
        if self.group is None:
            return [obj]
        out: List[Any] = [None] * self.world
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast(self, obj: Any) -> Any:
        if self.group is None:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def __del__(self) -> None:
        if self.group is not None and dist.is_initialized():
            dist.destroy_process_group()  # ruleid: MLS307

class SplitManifest:
    """Remembers the sample keys of the eval split (object array of str) in the data cache so
    that later evals, and resumed runs, can verify they score exactly the same pairs."""

    def __init__(self, root: str, name: str, keep_text: bool = True) -> None:
        self.path = Path(root).expanduser() / "manifests" / f"{name}.npy"
        self.keep_text = keep_text

    def load(self) -> Optional[np.ndarray]:
        if not self.path.exists():
            return None
        with self.path.open("rb") as fh:
            return np.lib.format.read_array(fh, allow_pickle=self.keep_text)  # todoruleid: family 10 (missed)  # ruleid: MLS104

    def check_or_store(self, keys: Sequence[str]) -> bool:
        known = self.load()
        if known is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.save(self.path, np.asarray(list(keys), dtype=object), allow_pickle=self.keep_text)
            return True
        return len(known) == len(keys) and all(str(a) == b for a, b in zip(known, keys))

def _dummy_batch(cfg) -> Dict[str, Any]:
    size, length = cfg.data.image_size, cfg.data.max_text_len
    ids = torch.zeros(1, length, dtype=torch.long)
    return {"images": torch.zeros(1, 3, size, size), "input_ids": ids,
            "attention_mask": (torch.arange(length) < 2).long().unsqueeze(0), "keys": []}

@torch.no_grad()
def encode_split(model, loader, cfg, device, session: EvalSession) -> List[Any]:
    was_training = model.training
    model.eval()
    img_embs, txt_embs, keys = [], [], []
    iterator = iter(loader)
    while True:
        batch = next(iterator, None)
        real = batch is not None
        if not session.any_rank(real):
            break
        batch = batch if real else _dummy_batch(cfg)
        out = model(*(batch[k].to(device, non_blocking=True) for k in ("images", "input_ids", "attention_mask")))
        if real:
            img_embs.append(out["image_embeds"].float().cpu())
            txt_embs.append(out["text_embeds"].float().cpu())
            keys.extend(batch["keys"])
    model.train(was_training)
    dim = cfg.model.embed_dim
    local = (torch.cat(img_embs) if img_embs else torch.empty(0, dim),
             torch.cat(txt_embs) if txt_embs else torch.empty(0, dim), keys)
    return session.gather(local)

def recall_at_k(similarity: torch.Tensor, ks: Sequence[int]) -> Dict[int, float]:
    """Row i's ground-truth match is column i."""
    order = similarity.argsort(dim=1, descending=True)
    target = torch.arange(similarity.shape[0]).unsqueeze(1)
    ranks = (order == target).nonzero()[:, 1]
    return {k: (ranks <= k).float().mean().item() * 100.0 for k in ks}  # ruleid: MLS306

def retrieval_metrics(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> Dict[str, float]:
    sim = image_embeds @ text_embeds.t()
    i2t = recall_at_k(sim, RECALL_KS)
    t2i = recall_at_k(sim.t(), RECALL_KS)
    results = {f"retrieval/i2t_R@{k}": v for k, v in i2t.items()}
    results.update({f"retrieval/t2i_R@{k}": v for k, v in t2i.items()})
    results["retrieval/mean_recall"] = float(np.mean(list(i2t.values()) + list(t2i.values())))
    results["retrieval/num_pairs"] = float(sim.shape[0])
    return results

def evaluate(model, loader, cfg, device, step: int) -> Dict[str, float]:
    session = EvalSession()
    parts = encode_split(model, loader, cfg, device, session)
    results: Dict[str, float] = {}
    if get_rank() == 0:
        image_embeds = torch.cat([p[0] for p in parts])
        text_embeds = torch.cat([p[1] for p in parts])
        keys = [k for p in parts for k in p[2]]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        image_embeds, text_embeds = image_embeds[order], text_embeds[order]
        if not SplitManifest(cfg.data.cache_dir, "val").check_or_store([keys[i] for i in order]):
            logger.warning("eval split differs from the stored manifest; metrics are not comparable")
        results.update(retrieval_metrics(image_embeds, text_embeds))
        logger.info("eval @ %d: %s", step, json.dumps({k: round(v, 3) for k, v in results.items()}))
    return session.broadcast(results)
