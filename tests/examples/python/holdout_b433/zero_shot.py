# ruff: noqa
# Hold-out batch 433 (textbook, CLIP contrastive pretraining DDP). Measured once in session 18 (round 118): 22/32 (69%) at medium+.
"""Zero-shot ImageNet-style classification with prompt ensembling."""
import json
import logging
import os
from collections import Counter
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets

from data import image_transform

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATES = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def load_classnames(path: str) -> List[str]:
    with open(path) as f:
        names = json.load(f)
    if isinstance(names, dict):
        names = [names[str(i)] for i in range(len(names))]
    return [n if isinstance(n, str) else n[-1] for n in names]


def load_templates(path: Optional[str]) -> List[Callable[[str], str]]:
    """Templates are either format strings or lambda sources, as in the open_clip metadata files."""
    if not path:
        return [lambda c, t=t: t.format(c) for t in DEFAULT_TEMPLATES]
    with open(path) as f:
        spec = json.load(f)
    fns = []
    for src in spec.get("templates", spec):
        src = src.strip()
        if not src.startswith("lambda"):
            fns.append(lambda c, t=src: t.format(c))
            continue
        fns.append(eval(compile(src, "<template>", "eval")))  # todoruleid: family 8 (missed)
    return fns


@torch.no_grad()
def build_zero_shot_classifier(model, tokenizer, classnames: Sequence[str],
                               templates: Sequence[Callable[[str], str]], device,
                               autocast, cache_path: Optional[str] = None, tag: str = "",
                               num_classes_per_batch: int = 16) -> torch.Tensor:
    if cache_path and os.path.exists(cache_path):
        cached = np.load(cache_path, allow_pickle=True).item()  # ruleid: MLS104
        if cached.get("tag") == tag and list(cached["classnames"]) == list(classnames):
            logger.info("using cached zero-shot head from %s", cache_path)
            return torch.from_numpy(cached["weights"]).to(device)

    weights = []
    for start in range(0, len(classnames), num_classes_per_batch):
        batch = classnames[start:start + num_classes_per_batch]
        texts = [tpl(c) for c in batch for tpl in templates]
        tokens = tokenizer(texts).to(device)
        with autocast():
            emb = model.encode_text(tokens)
        emb = emb.float().reshape(len(batch), len(templates), -1).mean(dim=1)
        weights.append(F.normalize(emb, dim=-1))
    classifier = torch.cat(weights, dim=0).T.contiguous()

    if cache_path:
        os.makedirs(os.path.dirname(cache_path) or ".", exist_ok=True)
        np.save(cache_path, {"tag": tag, "classnames": list(classnames),
                             "weights": classifier.cpu().numpy()})
    return classifier


def _ambiguous_classes(classnames: Sequence[str]) -> set:
    """Classes whose head noun collides with another class (e.g. 'crane' the bird and the machine)."""
    heads = [c.split()[-1].lower() for c in classnames]
    counts = Counter(heads)
    return {i for i, h in enumerate(heads) if counts[h] > 1}


def build_eval_loader(args, classnames: Sequence[str]) -> DataLoader:
    transform = image_transform(args.image_size, is_train=False)
    ds = datasets.ImageFolder(args.imagenet_val, transform=transform)
    if len(ds.classes) != len(classnames):
        raise ValueError(f"{len(ds.classes)} folders in {args.imagenet_val} but {len(classnames)} classnames")
    skip = _ambiguous_classes(classnames)
    ds.samples = [(p, t) for p, t in ds.samples if t not in skip]  # todoruleid: family 6 (missed)
    ds.targets = [t for _, t in ds.samples]
    logger.info("zero-shot eval set: %d images, %d classes", len(ds.samples), len(classnames))
    return DataLoader(ds, batch_size=args.eval_batch_size, num_workers=args.workers,
                      shuffle=False, pin_memory=True)


def _accuracy(logits: torch.Tensor, target: torch.Tensor, topk=(1, 5)):
    correct = logits.topk(max(topk), dim=1).indices.T.eq(target.view(1, -1))
    return [float(correct[:k].reshape(-1).float().sum().item()) for k in topk]


@torch.no_grad()
def run_zero_shot(model, classifier: torch.Tensor, loader: DataLoader, device, autocast) -> dict:
    model.eval()
    top1 = top5 = n = 0
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with autocast():
            feats = model.encode_image(images)
        logits = 100.0 * feats.float() @ classifier
        c1, c5 = _accuracy(logits, target, topk=(1, 5))
        top1 += c1
        top5 += c5
        n += images.shape[0]
    return {"imagenet-zeroshot-top1": top1 / max(n, 1), "imagenet-zeroshot-top5": top5 / max(n, 1)}


def zero_shot_eval(model, tokenizer, args, autocast, tag: str = "") -> dict:
    if not args.imagenet_val:
        return {}
    classnames = load_classnames(args.imagenet_classnames)
    templates = load_templates(args.zeroshot_templates)
    logger.info("building zero-shot classifier: %d classes x %d templates", len(classnames), len(templates))
    classifier = build_zero_shot_classifier(model, tokenizer, classnames, templates, args.device,
                                            autocast, cache_path=args.zeroshot_cache, tag=tag)
    loader = build_eval_loader(args, classnames)
    return run_zero_shot(model, classifier, loader, args.device, autocast)
