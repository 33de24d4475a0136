# ruff: noqa
# Hold-out batch 513 (textbook, multi-object tracking). Measured once in session 23 (round 138): 26/30 (87%) at medium+.
"""MOT17 data pipeline producing CenterNet-style targets plus identity labels."""
import configparser
import logging
import math
import os
import pickle
import random
import time

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger("mot.data")

MOT17_TRAIN = ["MOT17-02", "MOT17-04", "MOT17-05", "MOT17-09", "MOT17-10", "MOT17-11", "MOT17-13"]
MEAN = np.array([0.408, 0.447, 0.470], dtype=np.float32)
STD = np.array([0.289, 0.274, 0.278], dtype=np.float32)


def read_seqinfo(seq_dir):
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(seq_dir, "seqinfo.ini"))
    s = cfg["Sequence"]
    return {"name": s["name"], "im_dir": s.get("imDir", "img1"), "frame_rate": int(s.get("frameRate", 30)),
            "seq_len": int(s["seqLength"]), "ext": s.get("imExt", ".jpg")}


def load_mot_gt(gt_path, min_vis=0.1):
    """Returns [N, 7] float32: frame, track_id, x1, y1, x2, y2, visibility (pedestrians only)."""
    gt = np.loadtxt(gt_path, delimiter=",", dtype=np.float64, ndmin=2)
    keep = (gt[:, 6] == 1) & (gt[:, 7] == 1) & (gt[:, 8] >= min_vis)
    gt = gt[keep]
    return np.concatenate([gt[:, 0:4], gt[:, 2:4] + gt[:, 4:6], gt[:, 8:9]], axis=1).astype(np.float32)


def gaussian_radius(det_size, min_overlap=0.7):
    """CornerNet radius so that a shifted box still has IoU >= min_overlap."""
    h, w = det_size
    b1, c1 = h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    b2, c2 = 2 * (h + w), (1 - min_overlap) * w * h
    b3, c3 = -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * c1)) / 2
    r2 = (b2 + math.sqrt(b2 ** 2 - 16 * c2)) / 2
    r3 = (b3 + math.sqrt(b3 ** 2 - 16 * min_overlap * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap, center, radius):
    sigma = (2 * radius + 1) / 6
    m = np.arange(-radius, radius + 1, dtype=np.float32)
    g = np.exp(-(m[:, None] ** 2 + m[None, :] ** 2) / (2 * sigma * sigma))
    x, y = int(center[0]), int(center[1])
    h, w = heatmap.shape
    left, right = min(x, radius), min(w - x, radius + 1)
    top, bottom = min(y, radius), min(h - y, radius + 1)
    region = heatmap[y - top:y + bottom, x - left:x + right]
    patch = g[radius - top:radius + bottom, radius - left:radius + right]
    if min(patch.shape) > 0 and min(region.shape) > 0:
        np.maximum(region, patch, out=region)
    return heatmap


def letterbox(img, labels, height, width, color=(127.5, 127.5, 127.5)):
    """Resize keeping aspect ratio and pad to (height, width); labels are [N, 5] id,x1,y1,x2,y2."""
    h0, w0 = img.shape[:2]
    ratio = min(height / h0, width / w0)
    new_w, new_h = round(w0 * ratio), round(h0 * ratio)
    dw, dh = (width - new_w) / 2, (height - new_h) / 2
    img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=color)
    if len(labels):
        labels = labels.copy()
        labels[:, [1, 3]] = labels[:, [1, 3]] * ratio + dw
        labels[:, [2, 4]] = labels[:, [2, 4]] * ratio + dh
    return img, labels, (ratio, dw, dh)


def hflip(img, labels):
    img = np.ascontiguousarray(img[:, ::-1])
    w = img.shape[1]
    if len(labels):
        labels = labels.copy()
        labels[:, [1, 3]] = w - labels[:, [1, 3]]  # ruleid: MLS309
    return img, labels


def hsv_jitter(img, fraction=0.5):
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[:, :, 1:] *= np.array([random.uniform(1 - fraction, 1 + fraction) for _ in range(2)], np.float32)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2BGR)


def to_tensor(img):
    img = img[:, :, ::-1].astype(np.float32) / 255.0
    img = (img - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class MOT17JointDataset(Dataset):
    def __init__(self, root, seqs=None, detector="FRCNN", input_size=(608, 1088), down_ratio=4,
                 max_objs=500, augment=True, min_vis=0.1, id_jitter=0.3, cache_dir=None):
        self.root, self.seqs, self.detector = root, list(seqs or MOT17_TRAIN), detector
        self.height, self.width = input_size
        self.down_ratio, self.max_objs = down_ratio, max_objs
        self.augment, self.min_vis, self.id_jitter = augment, min_vis, id_jitter
        self.samples, self.num_ids = self._load_or_cache(cache_dir)
        logger.info("MOT17 %s: %d frames, %d identities", ",".join(self.seqs), len(self.samples), self.num_ids)

    def _load_or_cache(self, cache_dir):
        key = f"mot17_{self.detector}_{'-'.join(s[-2:] for s in self.seqs)}_v{self.min_vis:.2f}.pkl"
        cache_path = os.path.join(cache_dir, key) if cache_dir else None
        if cache_path and os.path.exists(cache_path):
            with open(cache_path, "rb") as f:
                cached = pickle.load(f)  # ruleid: MLS103
            return cached["samples"], cached["num_ids"]
        samples, num_ids = self._index()
        if cache_path:
            os.makedirs(cache_dir, exist_ok=True)
            with open(cache_path, "wb") as f:
                pickle.dump({"samples": samples, "num_ids": num_ids}, f)
        return samples, num_ids

    def _index(self):
        samples = []
        num_ids = 0
        for seq in self.seqs:
            seq_dir = os.path.join(self.root, "train", f"{seq}-{self.detector}")
            info = read_seqinfo(seq_dir)
            gt = load_mot_gt(os.path.join(seq_dir, "gt", "gt.txt"), self.min_vis)
            # compact the sparse MOT track ids to a contiguous range for the classifier
            uniq = np.unique(gt[:, 1])
            gt[:, 1] = np.searchsorted(uniq, gt[:, 1])  # todoruleid: family 6 (missed)
            num_ids = max(num_ids, len(uniq))
            by_frame = {}
            for row in gt:
                by_frame.setdefault(int(row[0]), []).append(row[1:6])
            for fid in range(1, info["seq_len"] + 1):
                img_path = os.path.join(seq_dir, info["im_dir"], f"{fid:06d}{info['ext']}")
                labels = np.asarray(by_frame.get(fid, []), dtype=np.float32).reshape(-1, 5)
                samples.append((img_path, labels))
        return samples, int(num_ids)

    def __len__(self):
        return len(self.samples)

    @staticmethod
    def _read_image(path, retries=3):
        for attempt in range(retries):
            img = cv2.imread(path)
            if img is not None:
                return img
            logger.warning("failed to read %s (attempt %d)", path, attempt + 1)
            time.sleep(0.5 * (attempt + 1))  # ok: MLS307
        raise IOError(f"could not read image {path}")

    def __getitem__(self, index):
        img_path, labels = self.samples[index]
        # same frame must get the same augmentation on every rank of a replica group
        random.seed(index)  # ruleid: MLS301
        img = self._read_image(img_path)
        labels = labels.copy()

        if self.augment:
            img = hsv_jitter(img)
            if random.random() < 0.5:
                img, labels = hflip(img, labels)
            if len(labels) > 1 and random.random() < self.id_jitter:
                # neighbouring boxes trade ids, mimics detector confusion in crowds
                labels[:, 0] = np.roll(labels[:, 0], 1)  # ruleid: MLS309

        img, labels, _ = letterbox(img, labels, self.height, self.width)
        targets = self._build_targets(labels)
        targets["img"] = to_tensor(img)
        return targets

    def _build_targets(self, labels):
        oh, ow = self.height // self.down_ratio, self.width // self.down_ratio
        hm = np.zeros((1, oh, ow), dtype=np.float32)
        wh = np.zeros((self.max_objs, 4), dtype=np.float32)
        reg = np.zeros((self.max_objs, 2), dtype=np.float32)
        ind = np.zeros((self.max_objs,), dtype=np.int64)
        reg_mask = np.zeros((self.max_objs,), dtype=np.uint8)
        ids = np.full((self.max_objs,), -1, dtype=np.int64)

        boxes = labels[:, 1:5] / self.down_ratio
        if len(boxes):
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, ow - 1)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, oh - 1)
        for k in range(min(len(labels), self.max_objs)):
            x1, y1, x2, y2 = boxes[k]
            w, h = x2 - x1, y2 - y1
            if w <= 0 or h <= 0:
                continue
            radius = max(0, int(gaussian_radius((math.ceil(h), math.ceil(w)))))
            ct = np.array([(x1 + x2) / 2, (y1 + y2) / 2], dtype=np.float32)
            ct_int = ct.astype(np.int32)
            draw_gaussian(hm[0], ct_int, radius)
            wh[k] = (ct[0] - x1, ct[1] - y1, x2 - ct[0], y2 - ct[1])
            ind[k] = ct_int[1] * ow + ct_int[0]
            reg[k] = ct - ct_int
            reg_mask[k] = 1
            ids[k] = int(labels[k, 0])
        arrays = {"hm": hm, "wh": wh, "reg": reg, "ind": ind, "reg_mask": reg_mask, "ids": ids}
        return {k: torch.from_numpy(v) for k, v in arrays.items()}


class ChunkedDistributedSampler(Sampler):
    """Shuffles chunks of consecutive frames (page-cache locality on NFS) and shards them over ranks."""

    def __init__(self, dataset, num_replicas=1, rank=0, chunk=8, seed=0):
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.chunk, self.seed, self.epoch = chunk, seed, 0
        self.chunks_per_rank = len(dataset) // chunk // num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed)  # ruleid: MLS301
        n_chunks = len(self.dataset) // self.chunk
        order = torch.randperm(n_chunks, generator=g).tolist()
        order = order[: self.chunks_per_rank * self.num_replicas]
        mine = order[self.rank::self.num_replicas]
        return iter([c * self.chunk + j for c in mine for j in range(self.chunk)])

    def __len__(self):
        return self.chunks_per_rank * self.chunk


def worker_init_fn(worker_id):
    # torch seeds `random` and itself per worker, numpy has to be done by hand
    seed = (int(time.time() * 1000) + worker_id * 1009) % (2 ** 32)
    np.random.seed(seed)  # ruleid: MLS301


def build_train_loader(args, rank, world_size):
    dataset = MOT17JointDataset(args.data_root, seqs=args.train_seqs, detector=args.detector,
                                input_size=tuple(args.input_size), min_vis=args.min_vis, cache_dir=args.cache_dir)
    sampler = ChunkedDistributedSampler(dataset, num_replicas=world_size, rank=rank, seed=args.seed)
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    loader = DataLoader(dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
                        pin_memory=True, drop_last=True, worker_init_fn=worker_init_fn, generator=g,
                        persistent_workers=args.workers > 0)
    return dataset, sampler, loader
