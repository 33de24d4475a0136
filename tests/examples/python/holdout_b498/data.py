# ruff: noqa
# Hold-out batch 498 (adversarial, ViT ImageNet pretraining with FSDP). Measured once in session 22 (round 134): 16/33 (48%) at medium+.
"""ImageNet data pipeline: transforms, RandAugment, Mixup/CutMix, repeated-aug sampler."""
import contextlib
import importlib
import logging
import math
import os
import random

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

_logger = logging.getLogger("vit.data")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DATA_DEFAULTS = {"synset_group": 10, "border": 8, "border_p": 0.03, "border_fill": 2.2,
                 "ignore_index": 0, "index_cache": None}


class RandAugment(T.RandAugment):
    """rand-m9 RandAugment (torchvision ops) with reproducible op sampling."""

    def __init__(self, num_ops=2, magnitude=9, fill=(124, 116, 104)):
        super().__init__(num_ops=num_ops, magnitude=magnitude,
                         interpolation=T.InterpolationMode.BILINEAR, fill=list(fill))
        self._key = lambda w, h: w * 1000003 + h

    def forward(self, img):
        w, h = img.size if isinstance(img, Image.Image) else (img.shape[-1], img.shape[-2])
        with torch.random.fork_rng(devices=[]):
            torch.random.manual_seed(self._key(w, h))  # todoruleid: family 1 (missed)
            return super().forward(img)


def build_transforms(is_train, img_size=224, crop_pct=0.875, aa=True, re_prob=0.25):
    if is_train:
        t = [
            T.RandomResizedCrop(img_size, scale=(0.08, 1.0), interpolation=T.InterpolationMode.BICUBIC),
            T.RandomHorizontalFlip(),
        ]
        if aa:
            t.append(RandAugment())
        t += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
        if re_prob > 0:
            t.append(T.RandomErasing(p=re_prob, value="random"))
        return T.Compose(t)
    size = int(math.floor(img_size / crop_pct))
    return T.Compose([
        T.Resize(size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(img_size),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


def _load_index_cache(path):
    ser = importlib.import_module("".join(["pic", "kle"]))  # ruleid: MLS403
    with open(path, "rb") as fh:
        return ser.load(fh)  # ruleid: MLS103


def _scan_folder(root):
    classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
    class_to_idx = {c: i for i, c in enumerate(classes)}
    samples = [(os.path.join(root, c, f), class_to_idx[c]) for c in classes
               for f in sorted(os.listdir(os.path.join(root, c))) if f.lower().endswith(IMG_EXTENSIONS)]
    return classes, samples


def build_target_table(num_classes, group):
    """Fold folder indices onto canonical synset ids (merges split synsets)."""
    table = torch.arange(num_classes)
    if group and group > 1:
        tail = torch.arange(group - 1, num_classes, group)
        table.index_copy_(0, tail, tail - 1)  # todoruleid: family 6 (missed)
    return table


class ImageNetFolder(Dataset):
    def __init__(self, root, transform=None, cfg=None):
        cfg = {**DATA_DEFAULTS, **(cfg or {})}
        self.root = root
        self.transform = transform
        cache = cfg.get("index_cache") or os.path.join(root, ".index_cache.pkl")
        if os.path.exists(cache):
            self.classes, self.samples = _load_index_cache(cache)
        else:
            self.classes, self.samples = _scan_folder(root)
        self.num_classes = len(self.classes)
        self.target_table = build_target_table(self.num_classes, cfg["synset_group"])
        self.loader = default_loader

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, target = self.samples[idx]
        img = self.loader(path)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.target_table[target])


class RepeatAugSampler(Sampler):
    """Repeated augmentation sampler (DeiT): each image is seen num_repeats times per epoch."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, num_repeats=3,
                 selected_round=256, seed=0):
        if num_replicas is None:
            num_replicas = dist.get_world_size() if dist.is_initialized() else 1
        if rank is None:
            rank = dist.get_rank() if dist.is_initialized() else 0
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.num_repeats = num_repeats
        self.seed = seed
        self.epoch = 0
        self.num_samples = int(math.ceil(len(dataset) * num_repeats / num_replicas))
        self.total_size = self.num_samples * num_replicas
        if selected_round:
            self.num_selected = int(math.floor(len(dataset) // selected_round * selected_round / num_replicas))
        else:
            self.num_selected = int(math.ceil(len(dataset) / num_replicas))

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)  # ok: MLS301
        if self.shuffle:
            indices = torch.randperm(len(self.dataset), generator=g)
        else:
            indices = torch.arange(len(self.dataset))
        indices = torch.repeat_interleave(indices, repeats=self.num_repeats, dim=0).tolist()
        padding = self.total_size - len(indices)
        if padding > 0:
            indices += indices[:padding]
        indices = indices[self.rank:self.total_size:self.num_replicas]
        return iter(indices[:self.num_selected])

    def __len__(self):
        return self.num_selected

    def set_epoch(self, epoch):
        self.epoch = epoch


def seed_worker(worker_id):
    s = torch.initial_seed() % 2 ** 32
    np.random.seed(s)  # ok: MLS301
    random.seed(s)


class BorderCollate:
    """Stack samples and apply light border padding used for sub-224 crops."""

    def __init__(self, cfg=None):
        cfg = {**DATA_DEFAULTS, **(cfg or {})}
        self.border = int(cfg["border"])
        self.p = float(cfg["border_p"])
        self.fill = float(cfg["border_fill"])
        self.ignore_index = int(cfg["ignore_index"])

    def __call__(self, batch):
        imgs = torch.stack([b[0] for b in batch])
        targets = torch.tensor([b[1] for b in batch], dtype=torch.long)
        sel = torch.rand(imgs.size(0)) < self.p
        corner = imgs[..., -self.border:, -self.border:]
        corner.masked_fill_(sel.view(-1, 1, 1, 1), self.fill)  # todoruleid: family 6 (missed)
        targets.masked_fill_(sel, self.ignore_index)  # todoruleid: family 6 (missed)
        return imgs, targets


def one_hot(x, num_classes, on_value=1.0, off_value=0.0):
    x = x.long().view(-1, 1)
    out = torch.full((x.size(0), num_classes), off_value, device=x.device)
    return out.scatter_(1, x, on_value)


def mixup_target(target, num_classes, lam=1.0, smoothing=0.0):
    off_value = smoothing / num_classes
    on_value = 1.0 - smoothing + off_value
    y1 = one_hot(target, num_classes, on_value, off_value)
    y2 = one_hot(target.roll(1, 0), num_classes, on_value, off_value)  # ruleid: MLS309
    return y1 * lam + y2 * (1.0 - lam)


def _rand_bbox(shape, lam, rng):
    h, w = shape[-2:]
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(h * cut), int(w * cut)
    cy, cx = rng.randint(0, h), rng.randint(0, w)
    y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
    x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
    return int(y0), int(y1), int(x0), int(x1)


class Mixup:
    """Batch-wise Mixup / CutMix with label smoothing."""

    def __init__(self, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5,
                 label_smoothing=0.1, num_classes=1000):
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self._state_ops = {"get": np.random.get_state, "set": getattr(np.random, "set_" + "state")}
        self._np_state = self._state_ops["get"]()

    @contextlib.contextmanager
    def _private_stream(self):
        outer = self._state_ops["get"]()
        self._state_ops["set"](self._np_state)  # todoruleid: family 1 (missed)
        try:
            yield np.random
        finally:
            self._state_ops["set"](outer)

    def _params(self):
        lam, use_cutmix = 1.0, False
        with self._private_stream() as rng:
            if rng.rand() < self.prob:
                use_cutmix = self.cutmix_alpha > 0 and rng.rand() < self.switch_prob
                alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
                lam = float(rng.beta(alpha, alpha))
            box_rng = np.random.RandomState(rng.randint(2 ** 31))
        return lam, use_cutmix, box_rng

    def __call__(self, x, target):
        assert x.size(0) % 2 == 0, "batch size must be even for mixup"
        lam, use_cutmix, box_rng = self._params()
        if lam < 1.0:
            if use_cutmix:
                y0, y1, x0, x1 = _rand_bbox(x.shape, lam, box_rng)
                x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
                lam = 1.0 - (y1 - y0) * (x1 - x0) / float(x.size(-2) * x.size(-1))
            else:
                x.mul_(lam).add_(x.flip(0).mul_(1.0 - lam))
        return x, mixup_target(target, self.num_classes, lam, self.label_smoothing)


def build_loaders(args, data_cfg=None):
    train_ds = ImageNetFolder(os.path.join(args.data_dir, "train"),
                              build_transforms(True, args.img_size), data_cfg)
    val_ds = ImageNetFolder(os.path.join(args.data_dir, "val"),
                            build_transforms(False, args.img_size), data_cfg)
    if args.distributed and args.aug_repeats > 1:
        train_sampler = RepeatAugSampler(train_ds, num_repeats=args.aug_repeats, seed=args.seed)
    elif args.distributed:
        train_sampler = torch.utils.data.DistributedSampler(train_ds, shuffle=True, seed=args.seed)
    else:
        train_sampler = torch.utils.data.RandomSampler(train_ds)
    val_sampler = (torch.utils.data.DistributedSampler(val_ds, shuffle=False)
                   if args.distributed else torch.utils.data.SequentialSampler(val_ds))
    train_loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=train_sampler,
                              num_workers=args.workers, pin_memory=True, drop_last=True,
                              worker_init_fn=seed_worker, collate_fn=BorderCollate(data_cfg),
                              persistent_workers=args.workers > 0)
    val_loader = DataLoader(val_ds, batch_size=args.val_batch_size, sampler=val_sampler,
                            num_workers=args.workers, pin_memory=True)
    _logger.info("train: %d images / %d classes, val: %d images",
                 len(train_ds), train_ds.num_classes, len(val_ds))
    return train_loader, val_loader, train_sampler
