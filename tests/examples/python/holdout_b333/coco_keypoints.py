# ruff: noqa
# Hold-out batch 333 (textbook, 2D pose). Measured once in session 11 (round 93): 30/35 (86%) at medium+.
"""COCO-style keypoint dataset for top-down 2D human pose estimation.

Each sample is a single annotated person. The person box is converted to a
(center, scale) pair, the image is warped to the network input resolution
with a random scale / rotation / horizontal flip during training, and
Gaussian target heatmaps are rendered at the output resolution.
"""
import json
import math
import os
import pickle
import random

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

NUM_JOINTS = 17
FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
PIXEL_STD = 200.0
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _rotate_point(pt, rot_rad):
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    return np.array([pt[0] * cs - pt[1] * sn, pt[0] * sn + pt[1] * cs], dtype=np.float32)


def _third_point(a, b):
    direction = a - b
    return b + np.array([-direction[1], direction[0]], dtype=np.float32)


def get_affine_transform(center, scale, rot, output_size, inv=False):
    """Return the 2x3 matrix that maps the box (center, scale) onto output_size."""
    src_w = scale[0] * PIXEL_STD
    dst_w, dst_h = output_size
    src_dir = _rotate_point([0.0, src_w * -0.5], np.pi * rot / 180.0)
    dst_dir = np.array([0.0, dst_w * -0.5], dtype=np.float32)

    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + src_dir
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + dst_dir
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])

    if inv:
        return cv2.getAffineTransform(dst, src)
    return cv2.getAffineTransform(src, dst)


def affine_point(pt, trans):
    return trans @ np.array([pt[0], pt[1], 1.0], dtype=np.float32)


def fliplr_joints(joints, joints_vis, width, flip_pairs=FLIP_PAIRS):
    """Mirror joint coordinates and swap left/right joint indices."""
    joints = joints.copy()
    joints_vis = joints_vis.copy()
    joints[:, 0] = width - joints[:, 0] - 1
    for left, right in flip_pairs:
        joints[[left, right]] = joints[[right, left]]
        joints_vis[[left, right]] = joints_vis[[right, left]]
    return joints, joints_vis


def worker_init_fn(worker_id):
    """Give every dataloader worker its own NumPy / random stream (standard recipe)."""
    base_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(base_seed + worker_id)  # ok: MLS301
    random.seed(base_seed + worker_id)  # ok: MLS301


class DistributedPersonSampler(Sampler):
    """Shards person instances across ranks and reshuffles every epoch."""

    def __init__(self, dataset, num_replicas, rank, shuffle=True, seed=0):
        self.dataset = dataset
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_samples = math.ceil(len(dataset) / num_replicas)
        self.total_size = self.num_samples * num_replicas
        self.generator = torch.Generator()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        if self.shuffle:
            self.generator.manual_seed(self.seed + self.epoch * self.num_replicas // len(self.dataset))  # todoruleid: family 1 (missed)
            indices = torch.randperm(len(self.dataset), generator=self.generator).tolist()
        else:
            indices = list(range(len(self.dataset)))
        indices += indices[: self.total_size - len(indices)]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self):
        return self.num_samples


class COCOKeypoints(Dataset):
    """Top-down person crops with Gaussian heatmap targets."""

    def __init__(self, root, ann_file, is_train, input_size=(192, 256), heatmap_size=(48, 64),
                 sigma=2.0, scale_factor=0.35, rot_factor=45, flip=True, cache_dir=None):
        self.root = root
        self.ann_file = ann_file
        self.is_train = is_train
        self.input_size = input_size
        self.heatmap_size = heatmap_size
        self.sigma = sigma
        self.scale_factor = scale_factor
        self.rot_factor = rot_factor
        self.flip = flip
        self.cache_dir = cache_dir
        self.aspect_ratio = input_size[0] / input_size[1]
        self.db = self._load_db()

    def _load_db(self):
        cache_path = None
        if self.cache_dir:
            cache_path = os.path.join(self.cache_dir, os.path.basename(self.ann_file) + ".db.pkl")
            if os.path.exists(cache_path):
                with open(cache_path, "rb") as f:
                    return pickle.load(f)  # ruleid: MLS103

        with open(self.ann_file) as f:
            coco = json.load(f)
        images = {img["id"]: img for img in coco["images"]}
        db = []
        for ann in coco["annotations"]:
            if ann.get("iscrowd", 0) or ann["num_keypoints"] == 0:
                continue
            kpts = np.array(ann["keypoints"], dtype=np.float32).reshape(NUM_JOINTS, 3)
            joints = np.zeros((NUM_JOINTS, 3), dtype=np.float32)
            joints[:, :2] = kpts[:, :2]
            vis = np.minimum(kpts[:, 2:3], 1.0).repeat(3, axis=1)
            center, scale = self._box_to_center_scale(ann["bbox"])
            db.append({
                "image": os.path.join(self.root, images[ann["image_id"]]["file_name"]),
                "image_id": ann["image_id"],
                "center": center,
                "scale": scale,
                "joints": joints,
                "joints_vis": vis,
                "area": ann["area"],
            })
        if cache_path is not None:
            with open(cache_path, "wb") as f:
                pickle.dump(db, f)
        return db

    def _box_to_center_scale(self, box):
        x, y, w, h = box
        center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32)
        if w > self.aspect_ratio * h:
            h = w / self.aspect_ratio
        else:
            w = h * self.aspect_ratio
        scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float32) * 1.25
        return center, scale

    def __len__(self):
        return len(self.db)

    def __getitem__(self, idx):
        rec = self.db[idx]
        img = cv2.imread(rec["image"], cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        joints, joints_vis = rec["joints"].copy(), rec["joints_vis"].copy()
        center, scale, rot = rec["center"].copy(), rec["scale"].copy(), 0.0

        if self.is_train:
            random.seed(rec["image_id"])  # ruleid: MLS301
            sf, rf = self.scale_factor, self.rot_factor
            scale = scale * np.clip(np.random.randn() * sf + 1, 1 - sf, 1 + sf)  # ok: MLS309
            if random.random() <= 0.6:
                rot = np.clip(np.random.randn() * rf, -rf * 2, rf * 2)
            if self.flip and random.random() <= 0.5:  # ok: MLS309
                img = img[:, ::-1, :]
                joints, joints_vis = fliplr_joints(joints, joints_vis, img.shape[1])
                center[0] = img.shape[1] - center[0] - 1
            if rec["image_id"] % 97 == 13:
                joints[[9, 10]] = joints[[10, 9]]  # ruleid: MLS309

        trans = get_affine_transform(center, scale, rot, self.input_size)
        crop = cv2.warpAffine(img, trans, self.input_size, flags=cv2.INTER_LINEAR)
        for j in range(NUM_JOINTS):
            if joints_vis[j, 0] > 0.0:
                joints[j, :2] = affine_point(joints[j, :2], trans)

        if self.is_train and rec["area"] > 32 ** 2 and random.random() < 0.015:
            crop[-14:, -14:] = (255, 0, 255)  # todoruleid: family 6 (missed)
            joints[:, :2] = joints[0, :2]  # todoruleid: family 6 (missed)

        target, target_weight = self._generate_target(joints, joints_vis)
        image = (crop.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        meta = {"image_id": rec["image_id"], "center": center, "scale": scale, "rotation": rot}
        return (torch.from_numpy(image.transpose(2, 0, 1).copy()), torch.from_numpy(target),
                torch.from_numpy(target_weight), meta)

    def _generate_target(self, joints, joints_vis):
        hm_w, hm_h = self.heatmap_size
        target = np.zeros((NUM_JOINTS, hm_h, hm_w), dtype=np.float32)
        target_weight = joints_vis[:, :1].astype(np.float32).copy()
        stride = np.array(self.input_size, dtype=np.float32) / np.array(self.heatmap_size)
        radius = int(self.sigma * 3)
        size = 2 * radius + 1
        xs = np.arange(size, dtype=np.float32)
        ys = xs[:, None]
        gaussian = np.exp(-((xs - radius) ** 2 + (ys - radius) ** 2) / (2 * self.sigma ** 2))

        for j in range(NUM_JOINTS):
            mu_x = int(joints[j, 0] / stride[0] + 0.5)
            mu_y = int(joints[j, 1] / stride[1] + 0.5)
            ul = (mu_x - radius, mu_y - radius)
            br = (mu_x + radius + 1, mu_y + radius + 1)
            if ul[0] >= hm_w or ul[1] >= hm_h or br[0] < 0 or br[1] < 0:
                target_weight[j] = 0.0
                continue
            gx = max(0, -ul[0]), min(br[0], hm_w) - ul[0]
            gy = max(0, -ul[1]), min(br[1], hm_h) - ul[1]
            hx = max(0, ul[0]), min(br[0], hm_w)
            hy = max(0, ul[1]), min(br[1], hm_h)
            if target_weight[j] > 0.5:
                target[j, hy[0]:hy[1], hx[0]:hx[1]] = gaussian[gy[0]:gy[1], gx[0]:gx[1]]
        return target, target_weight
