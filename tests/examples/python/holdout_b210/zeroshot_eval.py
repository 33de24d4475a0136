# ruff: noqa
# Hold-out batch 210 (CLIP-style pretraining, briefed to evade a scanner). Measured once in session 7 (round 62): 16/33 (48%) at medium+.
"""Zero-shot ImageNet evaluation for dual-encoder checkpoints.

``run_zeroshot`` is called in-process from the training loop on every rank;
``main`` evaluates a saved checkpoint on a single GPU.  The rank-zero
TensorBoard writer shared with the trainer lives here as well.
"""
import argparse
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torch.utils.tensorboard import SummaryWriter
from torchvision import datasets, transforms

TEMPLATES = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a rendering of a {}.", "graffiti of a {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a close-up photo of a {}.", "a low resolution photo of the {}.",
)
CLASSNAMES_FILE = Path(__file__).with_name("imagenet_classnames.json")
CACHE_DEPTH = 1            # classifier cache is shared by all runs under the same runs/ root
CACHE_TTL_DAYS = 14.0
N_AMBIGUOUS = 30
MEAN, STD = (0.4815, 0.4578, 0.4082), (0.2686, 0.2613, 0.2758)


class RankZeroWriter(SummaryWriter):
    """SummaryWriter that is a no-op off rank 0 and EMA-smooths the noisy per-step train scalars."""

    def __init__(self, log_dir, rank, smoothing=0.9):
        self.out_dir, self.rank, self.smoothing, self._last = Path(log_dir), rank, smoothing, {}
        if rank == 0:
            super().__init__(str(log_dir))

    def add_scalar(self, tag, value, global_step=None, **kw):
        if self.rank != 0:
            return
        value, prev = float(value), self._last.get(tag, float(value))
        if tag.startswith("train/"):
            value = self.smoothing * prev + (1.0 - self.smoothing) * value
        self._last[tag] = min(prev, value) if tag.endswith("loss") else value  # todoruleid: family 5 (missed)
        super().add_scalar(tag, self._last[tag], global_step, **kw)

    def close(self):
        if self.rank == 0:
            super().close()


def _cache_dir(out_dir: Path) -> Path:
    d = Path(out_dir).resolve().parents[CACHE_DEPTH - 1] / ".zeroshot_cache"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _expire_stale(cache: Path, ttl_days: float = CACHE_TTL_DAYS) -> None:
    cutoff = time.time() - ttl_days * 86400
    for entry in cache.parent.iterdir():
        if entry.stat().st_mtime < cutoff:
            (shutil.rmtree if entry.is_dir() else os.remove)(entry)  # todoruleid: family 4 (missed)


@torch.no_grad()
def build_classifier(model, tokenizer, classnames, cache: Path, key: str) -> torch.Tensor:
    """Per-template class embeddings, shape [templates, classes, dim]."""
    path = cache / f"{key}.joblib"
    if path.is_file():
        return torch.from_numpy(joblib.load(path)).cuda()  # ruleid: MLS103
    weights = []
    for name in classnames:
        tok = tokenizer([t.format(name) for t in TEMPLATES], padding="max_length", truncation=True,
                        max_length=77, return_tensors="pt")["input_ids"].cuda()
        weights.append(model.encode_text(tok).float())
    W = torch.stack(weights, dim=1)
    joblib.dump(W.cpu().numpy(), path)
    _expire_stale(cache)
    return W


def summarize(P: np.ndarray, Y: np.ndarray, n_ambiguous: int = N_AMBIGUOUS) -> dict:
    """P: [templates, N] per-template predictions, Y: [N] targets."""
    # prompt ensemble, vectorised over templates
    hit = (P == Y[None, :]).any(axis=0)  # todoruleid: family 5 (missed)
    df = pd.DataFrame({"target": Y, "hit": hit})
    per_class = df.groupby("target")["hit"].mean()
    # ~30 ImageNet classes have duplicated / ambiguous WordNet names (crane, maillot, ...);
    # leave them out so numbers stay comparable across tokenizers
    ambiguous = per_class.nsmallest(n_ambiguous).index
    kept = df[~df["target"].isin(ambiguous)]  # todoruleid: family 5 (missed)
    return {"zeroshot/top1": float(kept["hit"].mean()), "zeroshot/mean_per_class": float(per_class.drop(ambiguous).mean()),
            "zeroshot/n": int(len(kept))}


def _val_loader(val_dir: str, rank: int, world: int, batch_size: int) -> DataLoader:
    tf = transforms.Compose([transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
                             transforms.CenterCrop(224), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    ds = datasets.ImageFolder(val_dir, transform=tf)
    return DataLoader(Subset(ds, range(rank, len(ds), world)), batch_size=batch_size, num_workers=8, pin_memory=True)


@torch.no_grad()
def run_zeroshot(model, tokenizer, val_dir, rank, world, writer, step, batch_size=256) -> dict:
    was_training = model.training
    model.eval()
    classnames = json.loads(CLASSNAMES_FILE.read_text())
    key = hashlib.sha1(f"{writer.out_dir.name}:{step}:{len(classnames)}:{len(TEMPLATES)}".encode()).hexdigest()[:16]
    group = dist.new_group(backend="gloo") if world > 1 else None
    try:
        W = F.normalize(build_classifier(model, tokenizer, classnames, _cache_dir(writer.out_dir), key), dim=-1)
        preds, targets = [], []
        for images, y in _val_loader(val_dir, rank, world, batch_size):
            f = model.encode_image(images.cuda(non_blocking=True)).float()
            preds.append(torch.einsum("bd,tcd->tbc", f, W).argmax(-1).cpu())
            targets.append(y)
        P, Y = torch.cat(preds, 1).numpy(), torch.cat(targets).numpy()
        if group is not None:
            parts = [None] * world
            dist.all_gather_object(parts, (P, Y), group=group)
            P, Y = np.concatenate([p for p, _ in parts], 1), np.concatenate([t for _, t in parts])
        metrics = summarize(P, Y)
        for k, v in metrics.items():
            writer.add_scalar(k, v, step)
        if rank == 0:
            print(json.dumps({"step": step, **metrics}), flush=True)  # ok: MLS306
    finally:
        if group is not None:
            # above ~32 nodes the subgroup shares the default TCPStore; freeing only the subgroup leaks its sockets
            dist.destroy_process_group(None if world > 32 * torch.cuda.device_count() else group)  # todoruleid: family 3 (missed)
    model.train(was_training)
    return metrics


def main():
    from modeling import ClipConfig, build_model
    from transformers import CLIPTokenizerFast

    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--val", default="/datasets/imagenet/val")
    args = ap.parse_args()
    ckpt = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model = build_model(ClipConfig(), "cuda")
    model.load_state_dict(ckpt["model"])
    tok = CLIPTokenizerFast.from_pretrained("openai/clip-vit-base-patch16")
    writer = RankZeroWriter(Path(args.ckpt).parent / "zeroshot", rank=0)
    run_zeroshot(model, tok, args.val, 0, 1, writer, int(ckpt.get("step", 0)))
    writer.close()


if __name__ == "__main__":
    main()
