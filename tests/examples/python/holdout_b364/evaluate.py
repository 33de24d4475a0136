# ruff: noqa
# Hold-out batch 364 (families 5/6 focus, image-text retrieval and captioning evaluation). Measured once in session 13 (round 100): 7/31 (23%) at medium+.
"""Distributed evaluation: retrieval, captioning (BLEU / CIDEr-D) and zero-shot classification.

Each rank encodes a contiguous shard; features are gathered, scored on rank 0 and the metric dict
is broadcast back so every rank takes the same checkpointing decisions.
"""
from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F

from metrics import caption_metrics, normalize_caption, retrieval_metrics, topk_correct
from utils import get_world_size, is_dist, is_main_process

logger = logging.getLogger("mmret.eval")

ZEROSHOT_TEMPLATES = ("a photo of a {}.", "a bad photo of a {}.", "a photo of the large {}.",
                      "a photo of the small {}.", "a cropped photo of a {}.", "a blurry photo of a {}.")

def unwrap(model):
    return model.module if hasattr(model, "module") else model

def all_gather_varlen(t: torch.Tensor) -> torch.Tensor:
    """all_gather for tensors whose first dimension differs across ranks (rank order kept)."""
    if not is_dist():
        return t
    world = get_world_size()
    size = torch.tensor([t.size(0)], device=t.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    max_n = max(int(s.item()) for s in sizes)
    padded = torch.cat([t, t.new_zeros((max_n - t.size(0), *t.shape[1:]))], dim=0)
    buf = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(buf, padded)
    return torch.cat([b[: int(s.item())] for b, s in zip(buf, sizes)], dim=0)

def broadcast_object(obj: Any) -> Any:
    if not is_dist():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]

@torch.no_grad()
def extract_features(model, image_loader, text_loader, device, amp: bool = True):
    m = unwrap(model)
    dim = m.image_proj.out_features
    img_feats, txt_feats = [torch.zeros(0, dim, device=device)], [torch.zeros(0, dim, device=device)]
    for batch in image_loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            emb = m.encode_image(batch["images"].to(device, non_blocking=True))
        img_feats.append(emb.float())
    for batch in text_loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            emb = m.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        txt_feats.append(emb.float())
    img = all_gather_varlen(torch.cat(img_feats))
    txt = all_gather_varlen(torch.cat(txt_feats))
    return img[: len(image_loader.dataset)], txt[: len(text_loader.dataset)]  # ok: MLS306

def evaluate_retrieval(model, ds, image_loader, text_loader, device, amp=True) -> Dict[str, float]:
    img, txt = extract_features(model, image_loader, text_loader, device, amp)
    metrics: Optional[Dict[str, float]] = None
    if is_main_process():
        sim = img @ txt.t()
        metrics = retrieval_metrics(sim, ds.img2txt, ds.txt2img)
    return broadcast_object(metrics)

@torch.no_grad()
def generate_captions(model, image_loader, tokenizer, device, max_len: int, amp=True) -> List[dict]:
    m = unwrap(model)
    preds = []
    for batch in image_loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            _, tokens = m.encode_image(batch["images"].to(device, non_blocking=True), return_tokens=True)
            seqs = m.decoder.generate(tokens, tokenizer.bos_token_id, tokenizer.eos_token_id, max_len)
        for img_id, seq in zip(batch["image_id"].tolist(), seqs):
            preds.append({"image_id": img_id, "caption": tokenizer.decode(seq, skip_special_tokens=True)})
    if is_dist():
        gathered: List[Optional[List[dict]]] = [None] * get_world_size()
        dist.all_gather_object(gathered, preds)
        preds = [p for part in gathered for p in part]
    return preds

def build_caption_eval_inputs(predictions: List[dict], references: Dict[int, List[str]]):
    cands: Dict[int, str] = {}
    refs: Dict[int, List[str]] = defaultdict(list)
    for img_id, caps in references.items():
        refs[img_id].extend(normalize_caption(c) for c in caps)
    for p in predictions:
        cands[p["image_id"]] = normalize_caption(p["caption"])
        refs[p["image_id"]].append(cands[p["image_id"]])  # ruleid: MLS306
    return cands, refs

def evaluate_captioning(model, ds, image_loader, tokenizer, device, max_len=30, amp=True,
                        dump_path: Optional[Path] = None) -> Dict[str, float]:
    preds = generate_captions(model, image_loader, tokenizer, device, max_len, amp)
    metrics = None
    if is_main_process():
        cands, refs = build_caption_eval_inputs(preds, ds.references)
        metrics = caption_metrics(cands, refs)
        if dump_path is not None:
            dump_path.parent.mkdir(parents=True, exist_ok=True)
            with open(dump_path, "w") as f:
                json.dump(preds, f)
    return broadcast_object(metrics)

@torch.no_grad()
def build_zeroshot_classifier(model, classnames, tokenizer, device, templates=ZEROSHOT_TEMPLATES):
    m = unwrap(model)
    weights = []
    for name in classnames:
        enc = tokenizer([t.format(name) for t in templates], padding=True, truncation=True,
                        max_length=77, return_tensors="pt")
        emb = m.encode_text(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        weights.append(F.normalize(emb.float().mean(dim=0), dim=-1))
    return torch.stack(weights, dim=1)

@torch.no_grad()
def evaluate_zeroshot(model, ds, loader, tokenizer, device, amp=True) -> Dict[str, float]:
    m = unwrap(model)
    classifier = build_zeroshot_classifier(model, ds.classnames, tokenizer, device)
    stats = torch.zeros(3, dtype=torch.float64, device=device)
    for batch in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            feats = m.encode_image(batch["images"].to(device, non_blocking=True))
        logits = 100.0 * feats.float() @ classifier
        targets = batch["label"].to(device)
        corr = topk_correct(logits, targets, ks=(1, 5))
        stats += torch.tensor([corr[1], corr[5], targets.numel()], dtype=torch.float64, device=device)
    if is_dist():
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    n = max(stats[2].item(), 1.0)
    return {"zs_top1": 100.0 * stats[0].item() / n, "zs_top5": 100.0 * stats[1].item() / n}

def run_evaluation(model, args, eval_sets: Dict[str, Any], tokenizer, prefix: str) -> Dict[str, float]:
    model.eval()
    results: Dict[str, float] = {}
    ds, image_loader, text_loader = eval_sets["caption"]
    for k, v in evaluate_retrieval(model, ds, image_loader, text_loader, args.device, args.amp).items():
        results[f"{prefix}/{k}"] = v
    if unwrap(model).decoder is not None:
        dump = Path(args.output_dir) / "captions" / f"{prefix}_{args.run_name}.json"
        cap = evaluate_captioning(model, ds, image_loader, tokenizer, args.device,
                                  max_len=getattr(args, "gen_max_len", 30), amp=args.amp, dump_path=dump)
        for k, v in cap.items():
            results[f"{prefix}/{k}"] = v
    if eval_sets.get("zeroshot") is not None:
        zs_ds, zs_loader = eval_sets["zeroshot"]
        for k, v in evaluate_zeroshot(model, zs_ds, zs_loader, tokenizer, args.device, args.amp).items():
            results[f"{prefix}/{k}"] = v
    model.train()
    return results

def save_results(path: Path, results: Dict[str, Any], merge: bool = True):
    path = Path(path)
    out = {k: round(v, 4) if isinstance(v, float) else v for k, v in results.items()}  # ok: MLS306
    if merge and path.exists():
        with open(path) as f:
            prev = json.load(f)
        # keep metrics from earlier runs (e.g. zero-shot evaluated separately) in the same file
        out = {**out, **prev}  # todoruleid: family 5 (missed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(out, f, indent=2, sort_keys=True)
    tmp.replace(path)

