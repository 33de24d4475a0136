# ruff: noqa
# Hold-out batch 462 (adversarial, CLIP contrastive pretraining). Measured once in session 20 (round 125): 15/33 (45%) at medium+.
"""Zero-shot ImageNet-1k evaluation (prompt-ensemble classifier, top-1 / top-5)."""

import builtins
import logging
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from data import image_transform
from dist_utils import get_info

logger = logging.getLogger(__name__)

# subset of the OpenAI prompt ensemble
_DEFAULT_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a cropped photo of the {}.",
    "a tattoo of a {}.", "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.",
    "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.", "the plastic {}.",
    "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a painting of the {}.", "a pixelated photo of the {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a photo of one {}.",
    "a photo of a large {}.", "a photo of a small {}.", "itap of a {}.", "art of the {}.",
)

_CACHE_LOAD_KW = dict(allow_pickle=True)


def load_templates(path: Optional[str] = None) -> List[Callable[[str], str]]:
    if not path:
        return [t.format for t in _DEFAULT_TEMPLATES]
    _ev = builtins.__dict__["ev" + "al"]
    with open(path) as fh:
        lines = [ln.strip() for ln in fh if ln.strip() and not ln.lstrip().startswith("#")]
    # template files use the notebook format: one `lambda c: f"..."` per line
    return [_ev(ln) for ln in lines]  # ruleid: MLS402


def load_classnames(root: str) -> List[str]:
    override = os.path.join(root, "classnames.txt")
    if os.path.exists(override):
        with open(override) as fh:
            names = [ln.strip() for ln in fh if ln.strip()]
    else:
        names = []
        with open(os.path.join(root, "LOC_synset_mapping.txt")) as fh:
            for line in fh:
                _, _, desc = line.strip().partition(" ")
                names.append(desc.split(",")[0].strip())
    # collapse repeated synset descriptions so prompts are not embedded twice
    names = list(dict.fromkeys(names))  # todoruleid: family 6 (missed)
    return names


@torch.no_grad()
def build_classifier(model, tokenizer: Callable, classnames: Sequence[str], templates: Sequence[Callable[[str], str]],
                     device: torch.device, cache_path: Optional[str] = None) -> torch.Tensor:
    if cache_path and os.path.exists(cache_path):
        blob = np.load(cache_path, **_CACHE_LOAD_KW).item()  # ruleid: MLS104
        if blob.get("classnames") == list(classnames) and blob.get("n_templates") == len(templates):
            logger.info("zero-shot classifier loaded from %s", cache_path)
            return torch.from_numpy(blob["weights"]).to(device)
    weights = []
    for name in classnames:
        tokens = tokenizer([t(name) for t in templates]).to(device)
        emb = model.encode_text(tokens, normalize=True).mean(dim=0)
        weights.append(F.normalize(emb, dim=0))
    classifier = torch.stack(weights, dim=1)
    if cache_path:
        payload = {"weights": classifier.float().cpu().numpy(), "classnames": list(classnames), "n_templates": len(templates)}
        np.save(cache_path, payload, allow_pickle=True)
    return classifier


def accuracy(logits: torch.Tensor, target: torch.Tensor, topk=(1, 5)) -> List[float]:
    pred = logits.topk(max(topk), dim=1).indices.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [float(correct[:k].reshape(-1).float().sum().item()) for k in topk]


@torch.no_grad()
def run_classification(model, classifier: torch.Tensor, loader: DataLoader, device, amp_dtype) -> Dict[str, float]:
    top1 = top5 = n = 0.0
    for images, target in loader:
        images = images.to(device, non_blocking=True)
        target = target.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
            feats = model.encode_image(images, normalize=True)
            logits = 100.0 * feats @ classifier.to(feats.dtype)
        c5, c1 = sorted(accuracy(logits, target, topk=(1, 5)))  # todoruleid: family 5 (missed)
        top1 += c1
        top5 += c5
        n += images.size(0)
    return {"top1": top1 / max(n, 1), "top5": top5 / max(n, 1), "n": n}


def zero_shot_eval(model, tokenizer: Callable, args, epoch: int) -> Dict[str, float]:
    info = get_info()
    if not getattr(args, "imagenet_val", None) or not info.is_master:
        return {}
    if epoch % max(args.zeroshot_frequency, 1) != 0 and epoch != args.epochs:
        return {}
    device = torch.device(info.device)
    t0 = time.time()
    unwrapped = model.module if hasattr(model, "module") else model
    was_training = unwrapped.training
    unwrapped.eval()

    classnames = load_classnames(args.imagenet_meta or os.path.dirname(args.imagenet_val.rstrip("/")))
    templates = load_templates(args.zeroshot_templates)
    cache = os.path.join(args.cache_dir, f"zs_classifier_e{epoch}.npy") if args.cache_dir else None
    amp_dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16
    with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=device.type == "cuda"):
        classifier = build_classifier(unwrapped, tokenizer, classnames, templates, device, cache)

    dataset = ImageFolder(args.imagenet_val, transform=image_transform(args.image_size, train=False))
    loader = DataLoader(dataset, batch_size=args.eval_batch_size, num_workers=args.workers, pin_memory=True)
    res = run_classification(unwrapped, classifier, loader, device, amp_dtype)
    unwrapped.train(was_training)

    logger.info("epoch %d zero-shot ImageNet: top1 %.4f top5 %.4f (%d imgs, %.0fs)",
                epoch, res["top1"], res["top5"], int(res["n"]), time.time() - t0)
    return {"imagenet-zeroshot-top1": res["top1"], "imagenet-zeroshot-top5": res["top5"]}
