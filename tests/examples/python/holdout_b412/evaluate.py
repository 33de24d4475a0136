# ruff: noqa
# Hold-out batch 412 (family-focused 2/6, CLIP-style dual-encoder fine-tuning). Measured once in session 16 (round 112): 5/30 (17%) at medium+.
"""Zero-shot classification (prompt-ensembled text classifier) and image-text retrieval metrics."""

from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from data import clean_caption, load_rgb

logger = logging.getLogger(__name__)

IMAGENET_TEMPLATES = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a rendering of a {}.",
    "a cropped photo of the {}.", "a bright photo of a {}.", "a dark photo of the {}.",
    "a close-up photo of a {}.", "a low resolution photo of a {}.", "a blurry photo of the {}.",
    "a photo of the large {}.", "a photo of the small {}.", "itap of a {}.",
)


@torch.no_grad()
def build_zeroshot_classifier(model, tokenizer, classnames: Sequence[str], templates: Sequence[str],
                              device: torch.device, batch_classes: int = 64) -> torch.Tensor:
    """Returns an (embed_dim, num_classes) matrix of prompt-ensembled, L2-normalised class embeddings."""
    weights = []
    for start in range(0, len(classnames), batch_classes):
        chunk = classnames[start:start + batch_classes]
        texts = [t.format(c) for c in chunk for t in templates]
        ids = tokenizer(texts).to(device)
        emb = model.encode_text(ids, normalize=True)
        emb = emb.view(len(chunk), len(templates), -1).mean(dim=1)
        weights.append(F.normalize(emb, dim=-1))
    return torch.cat(weights, dim=0).T.contiguous()


@torch.no_grad()
def zeroshot_accuracy(model, classifier: torch.Tensor, loader: DataLoader, device: torch.device,
                      amp_dtype: Optional[torch.dtype] = torch.bfloat16) -> Dict[str, float]:
    correct1 = correct5 = total = 0
    for batch in loader:
        images = batch["images"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            feats = model.encode_image(images, normalize=True)
        logits = feats.float() @ classifier.float()
        top5 = logits.topk(min(5, logits.size(1)), dim=1).indices
        correct1 += (top5[:, 0] == labels).sum().item()
        correct5 += (top5 == labels[:, None]).any(dim=1).sum().item()
        total += labels.numel()
    total = max(total, 1)
    return {"zeroshot/top1": 100.0 * correct1 / total, "zeroshot/top5": 100.0 * correct5 / total}


class RetrievalSet(Dataset):
    """COCO/Flickr-style eval set: unique images, all of their captions, and the text->image map."""

    def __init__(self, ann_file: str, image_root: str, transform, tokenizer, max_images: Optional[int] = None):
        with open(ann_file, encoding="utf-8") as f:
            ann = json.load(f)
        files = {im["id"]: im["file_name"] for im in ann["images"]}
        caps: Dict[int, List[str]] = defaultdict(list)
        for a in ann["annotations"]:
            caps[a["image_id"]].append(clean_caption(a["caption"]))
        ids = sorted(caps)[:max_images] if max_images else sorted(caps)
        self.paths = [os.path.join(image_root, files[i]) for i in ids]
        self.texts = [c for i in ids for c in caps[i]]
        self.txt2img = torch.tensor([j for j, i in enumerate(ids) for _ in caps[i]], dtype=torch.long)
        self.transform = transform
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: int):
        return self.transform(load_rgb(self.paths[idx]))


@torch.no_grad()
def retrieval_metrics(model, dataset: RetrievalSet, device: torch.device, batch_size: int = 256,
                      workers: int = 4, ks=(1, 5, 10)) -> Dict[str, float]:
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    img_feats = []
    for images in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            img_feats.append(model.encode_image(images.to(device), normalize=True).float())
    img_feats = torch.cat(img_feats)
    txt_feats = []
    for s in range(0, len(dataset.texts), batch_size):
        ids = dataset.tokenizer(dataset.texts[s:s + batch_size]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            txt_feats.append(model.encode_text(ids, normalize=True).float())
    txt_feats = torch.cat(txt_feats)

    sim = txt_feats @ img_feats.T  # (num_texts, num_images)
    txt2img = dataset.txt2img.to(device)
    # text -> image: rank of the paired image among all images
    ranks_t2i = (sim > sim.gather(1, txt2img[:, None])).sum(dim=1)
    out = {f"retrieval/t2i_R@{k}": 100.0 * (ranks_t2i < k).float().mean().item() for k in ks}
    out["retrieval/mean_R"] = sum(out.values()) / len(ks)
    return out


def run_evaluation(model, tokenizer, device, zs_loader=None, zs_classnames=None, retrieval_set=None,
                   templates: Sequence[str] = IMAGENET_TEMPLATES) -> Dict[str, float]:
    model.eval()
    metrics: Dict[str, float] = {}
    if zs_loader is not None and zs_classnames:
        classifier = build_zeroshot_classifier(model, tokenizer, zs_classnames, templates, device)
        metrics.update(zeroshot_accuracy(model, classifier, zs_loader, device))
    if retrieval_set is not None:
        metrics.update(retrieval_metrics(model, retrieval_set, device))
    model.train()
    return metrics
