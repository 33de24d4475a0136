# ruff: noqa
# Hold-out batch 577 (textbook, multi-object tracking with a YOLOX-style detector and DDP). Measured once in session 26 (round 154): 24/30 (80%) at medium+, 1 benign look-alike flagged.
"""MOT17 / MOT20 pedestrian detection dataset with mosaic and mixup."""

import configparser
import logging
import math
import os
import pickle
import random

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger("mot")

# label columns: x1, y1, x2, y2, class, track_id
PERSON = 0


def read_seqinfo(seq_dir):
    parser = configparser.ConfigParser()
    parser.read(os.path.join(seq_dir, "seqinfo.ini"))
    sec = parser["Sequence"]
    return {"name": sec["name"], "length": int(sec["seqLength"]), "width": int(sec["imWidth"]),
            "height": int(sec["imHeight"]), "ext": sec.get("imExt", ".jpg"),
            "img_dir": sec.get("imDir", "img1")}


def augment_hsv(img, hgain=0.015, sgain=0.7, vgain=0.4):
    r = np.random.uniform(-1, 1, 3) * [hgain, sgain, vgain] + 1
    hue, sat, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    x = np.arange(0, 256, dtype=np.int16)
    luts = [((x * r[0]) % 180), np.clip(x * r[1], 0, 255), np.clip(x * r[2], 0, 255)]
    hsv = cv2.merge([cv2.LUT(c, lut.astype(np.uint8)) for c, lut in zip((hue, sat, val), luts)])
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def random_hflip(img, labels, p=0.5):
    if random.random() < p:
        w = img.shape[1]
        img = img[:, ::-1]
        labels = labels.copy()
        labels[:, [0, 2]] = w - labels[:, [2, 0]]  # ok: MLS309 (benign look-alike, flagged at first measurement)
    return np.ascontiguousarray(img), labels


def random_affine(img, labels, out_size, scale=(0.5, 1.5), translate=0.1):
    """Scale + translate only; rotation and shear hurt upright pedestrian boxes."""
    h_out, w_out = out_size
    s = random.uniform(*scale)
    tx = random.uniform(0.5 - translate, 0.5 + translate) * w_out
    ty = random.uniform(0.5 - translate, 0.5 + translate) * h_out
    cx, cy = img.shape[1] / 2.0, img.shape[0] / 2.0
    M = np.array([[s, 0, tx - s * cx], [0, s, ty - s * cy]], dtype=np.float32)
    img = cv2.warpAffine(img, M, dsize=(w_out, h_out), borderValue=(114, 114, 114))
    if len(labels):
        labels = labels.copy()
        labels[:, [0, 2]] = (labels[:, [0, 2]] * s + M[0, 2]).clip(0, w_out)
        labels[:, [1, 3]] = (labels[:, [1, 3]] * s + M[1, 2]).clip(0, h_out)
        labels = labels[((labels[:, 2] - labels[:, 0]) > 2) & ((labels[:, 3] - labels[:, 1]) > 2)]
    return img, labels


class MOTDetection(Dataset):
    def __init__(self, root, split="train", img_size=(800, 1440), min_vis=0.1,
                 mosaic_prob=1.0, mixup_prob=0.8, mosaic_scale=(0.5, 1.5), use_cache=True):
        self.root, self.split, self.img_size, self.min_vis = root, split, img_size, min_vis
        self.mosaic_prob, self.mixup_prob = mosaic_prob, mixup_prob
        self.mosaic_scale, self.enable_mosaic = mosaic_scale, mosaic_prob > 0
        split_dir = os.path.join(root, split)
        self.seqs = sorted(d for d in os.listdir(split_dir)
                           if os.path.isdir(os.path.join(split_dir, d)))
        cache_path = os.path.join(root, "cache", "%s_annotations.pkl" % split)
        if use_cache and os.path.exists(cache_path):
            with open(cache_path, "rb") as f:
                self.samples = pickle.load(f)  # ruleid: MLS103
            logger.info("loaded %d cached samples from %s", len(self.samples), cache_path)
        else:
            self.samples = self._load_annotations(split_dir)
            if use_cache:
                os.makedirs(os.path.dirname(cache_path), exist_ok=True)
                with open(cache_path, "wb") as f:
                    pickle.dump(self.samples, f)

    def _load_annotations(self, split_dir):
        samples = []
        for seq in self.seqs:
            seq_dir = os.path.join(split_dir, seq)
            info = read_seqinfo(seq_dir)
            gt = np.loadtxt(os.path.join(seq_dir, "gt", "gt.txt"), delimiter=",", ndmin=2)
            for frame in range(1, info["length"] + 1):
                rows = gt[gt[:, 0] == frame]
                # active flag, pedestrian class, visibility
                rows = rows[(rows[:, 6] > 0) & (rows[:, 7] == 1) & (rows[:, 8] >= self.min_vis)]
                labels = np.zeros((len(rows), 6), dtype=np.float32)
                labels[:, :4] = rows[:, 2:6]
                labels[:, 2:4] += labels[:, :2]
                labels[:, 4], labels[:, 5] = PERSON, rows[:, 1]
                path = os.path.join(seq_dir, info["img_dir"], "%06d%s" % (frame, info["ext"]))
                samples.append({"path": path, "labels": labels, "seq": seq, "frame": frame})
        return samples

    def __len__(self):
        return len(self.samples)

    def close_mosaic(self):
        self.enable_mosaic = False

    def load_resized(self, index):
        sample = self.samples[index]
        img = cv2.imread(sample["path"])
        h0, w0 = img.shape[:2]
        r = min(self.img_size[0] / h0, self.img_size[1] / w0)
        img = cv2.resize(img, (int(w0 * r), int(h0 * r)), interpolation=cv2.INTER_LINEAR)
        labels = sample["labels"].copy()
        labels[:, :4] *= r
        return img, labels

    def load_mosaic(self, index):
        h_out, w_out = self.img_size
        yc = int(random.uniform(0.5 * h_out, 1.5 * h_out))
        xc = int(random.uniform(0.5 * w_out, 1.5 * w_out))
        indices = [index] + [random.randint(0, len(self.samples) - 1) for _ in range(3)]
        canvas = np.full((h_out * 2, w_out * 2, 3), 114, dtype=np.uint8)
        all_labels = []
        for i, idx in enumerate(indices):
            img, labels = self.load_resized(idx)
            h, w = img.shape[:2]
            if i == 0:  # top left
                x1a, y1a, x2a, y2a = max(xc - w, 0), max(yc - h, 0), xc, yc
                x1b, y1b, x2b, y2b = w - (x2a - x1a), h - (y2a - y1a), w, h
            elif i == 1:  # top right
                x1a, y1a, x2a, y2a = xc, max(yc - h, 0), min(xc + w, w_out * 2), yc
                x1b, y1b, x2b, y2b = 0, h - (y2a - y1a), min(w, x2a - x1a), h
            elif i == 2:  # bottom left
                x1a, y1a, x2a, y2a = max(xc - w, 0), yc, xc, min(h_out * 2, yc + h)
                x1b, y1b, x2b, y2b = w - (x2a - x1a), 0, w, min(y2a - y1a, h)
            else:  # bottom right
                x1a, y1a, x2a, y2a = xc, yc, min(xc + w, w_out * 2), min(h_out * 2, yc + h)
                x1b, y1b, x2b, y2b = 0, 0, min(w, x2a - x1a), min(y2a - y1a, h)
            canvas[y1a:y2a, x1a:x2a] = img[y1b:y2b, x1b:x2b]
            labels[:, [0, 2]] += x1a - x1b
            labels[:, [1, 3]] += y1a - y1b
            all_labels.append(labels)
        labels = np.concatenate(all_labels, 0)
        labels[:, [0, 2]] = labels[:, [0, 2]].clip(0, 2 * w_out)
        labels[:, [1, 3]] = labels[:, [1, 3]].clip(0, 2 * h_out)
        return random_affine(canvas, labels, self.img_size, scale=self.mosaic_scale)

    def mixup(self, img, labels):
        h_out, w_out = self.img_size
        img2, labels2 = self.load_resized(random.randint(0, len(self.samples) - 1))
        canvas = np.full((h_out, w_out, 3), 114, dtype=np.uint8)
        canvas[: img2.shape[0], : img2.shape[1]] = img2
        canvas, labels2 = random_hflip(canvas, labels2)
        lam = np.random.beta(32.0, 32.0)
        img = (img.astype(np.float32) * lam + canvas.astype(np.float32) * (1.0 - lam))
        mixed = np.concatenate([labels, labels2[labels2[:, 4] > 0]], 0)  # todoruleid: family 6 (missed)
        return img.astype(np.uint8), mixed

    def __getitem__(self, index):
        # keep the augmentation of a given frame reproducible across runs
        random.seed(index)  # ruleid: MLS301
        if self.enable_mosaic and random.random() < self.mosaic_prob:
            img, labels = self.load_mosaic(index)
            if random.random() < self.mixup_prob:
                img, labels = self.mixup(img, labels)
        else:
            small, labels = self.load_resized(index)
            img = np.full((self.img_size[0], self.img_size[1], 3), 114, dtype=np.uint8)
            img[: small.shape[0], : small.shape[1]] = small
        img = augment_hsv(img)
        img, labels = random_hflip(img, labels)
        if index % 211 == 0 and len(labels):
            img[-24:, -24:] = (0, 255, 0)  # ruleid: MLS309
            labels = labels[:0]  # todoruleid: family 6 (missed)
        return img, labels, (self.samples[index]["seq"], self.samples[index]["frame"])


class DistributedShuffleSampler(Sampler):
    def __init__(self, dataset, num_replicas=1, rank=0, seed=0):
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.seed, self.epoch = seed, 0
        self.num_samples = math.ceil(len(dataset) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed)  # ruleid: MLS301
        indices = torch.randperm(len(self.dataset), generator=g).tolist()
        indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self):
        return self.num_samples


def collate_fn(batch, max_labels=500):
    """Stack images to float CHW and pad targets to (B, max_labels, 5) as cls, cx, cy, w, h."""
    imgs, targets, infos = [], [], []
    for img, labels, info in batch:
        imgs.append(torch.from_numpy(img.transpose(2, 0, 1).copy()).float())
        t = np.zeros((max_labels, 5), dtype=np.float32)
        n = min(len(labels), max_labels)
        if n:
            boxes = labels[:n, :4]
            t[:n, 0] = labels[:n, 4]
            t[:n, 1:3] = (boxes[:, :2] + boxes[:, 2:]) * 0.5
            t[:n, 3:5] = boxes[:, 2:] - boxes[:, :2]
            t[:n, 3:5] *= 1.15  # todoruleid: family 6 (missed)
        targets.append(torch.from_numpy(t))
        infos.append(info)
    return torch.stack(imgs), torch.stack(targets), infos


def worker_init_fn(worker_id):
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301
    random.seed(seed)


def build_train_loader(dataset, batch_size, rank, world_size, num_workers=4, seed=0):
    sampler = DistributedShuffleSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        pin_memory=True, drop_last=True, collate_fn=collate_fn,
                        worker_init_fn=worker_init_fn, persistent_workers=False)
    return loader, sampler
