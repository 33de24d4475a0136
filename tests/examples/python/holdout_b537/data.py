# ruff: noqa
# Hold-out batch 537 (textbook, LiDAR 3D object detection). Measured once in session 24 (round 144): 22/30 (73%) at medium+.
"""KITTI LiDAR dataset: label parsing, GT sampling, augmentation, pillar voxelization."""
import logging
import pickle
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from utils import worker_init_fn

logger = logging.getLogger(__name__)

CLASS_NAMES = ("Car", "Pedestrian", "Cyclist")
TYPE_REMAP = {
    "Cyclist": "Pedestrian",  # todoruleid: family 6 (missed)
    "Misc": "DontCare",
    "Person_sitting": "DontCare",
    "Tram": "DontCare",
    "Truck": "DontCare",
    "Van": "DontCare",
}

def read_calib(path):
    data = {}
    with open(path) as f:
        for line in f:
            if ":" not in line:
                continue
            key, val = line.split(":", 1)
            data[key.strip()] = np.array([float(v) for v in val.split()], dtype=np.float32)
    return {"P2": data["P2"].reshape(3, 4), "R0": data["R0_rect"].reshape(3, 3),
            "V2C": data["Tr_velo_to_cam"].reshape(3, 4)}

def rect_to_lidar(pts_rect, calib):
    r0, v2c = np.eye(4, dtype=np.float32), np.eye(4, dtype=np.float32)
    r0[:3, :3], v2c[:3, :4] = calib["R0"], calib["V2C"]
    hom = np.hstack([pts_rect, np.ones((pts_rect.shape[0], 1), dtype=np.float32)])
    return (hom @ np.linalg.inv(r0 @ v2c).T)[:, :3]

def get_difficulty(height_px, truncation, occlusion):
    if height_px >= 40 and occlusion <= 0 and truncation <= 0.15:
        return 0
    if height_px >= 25 and occlusion <= 1 and truncation <= 0.30:
        return 1
    if height_px >= 25 and occlusion <= 2 and truncation <= 0.50:
        return 2
    return -1

def read_label(path, calib):
    names, dims, locs, rots, diffs = [], [], [], [], []
    with open(path) as f:
        for line in f:
            parts = line.strip().split(" ")
            if len(parts) < 15:
                continue
            trunc, occ = float(parts[1]), int(float(parts[2]))
            bbox = [float(v) for v in parts[4:8]]
            names.append(TYPE_REMAP.get(parts[0], parts[0]))
            dims.append([float(v) for v in parts[8:11]])
            locs.append([float(v) for v in parts[11:14]])
            rots.append(float(parts[14]))
            diffs.append(get_difficulty(bbox[3] - bbox[1], trunc, occ))
    if not names:
        return {"name": np.zeros(0, dtype="<U10"), "gt_boxes_lidar": np.zeros((0, 7), np.float32),
                "difficulty": np.zeros(0, np.int32)}
    dims, rots = np.array(dims, dtype=np.float32), np.array(rots, dtype=np.float32)
    xyz = rect_to_lidar(np.array(locs, dtype=np.float32), calib)
    h, w, l = dims[:, 0], dims[:, 1], dims[:, 2]
    xyz[:, 2] += h / 2
    boxes = np.concatenate([xyz, np.stack([l, w, h, -(rots + np.pi / 2)], axis=1)], axis=1)
    return {"name": np.array(names), "gt_boxes_lidar": boxes.astype(np.float32),
            "difficulty": np.array(diffs, dtype=np.int32)}

def rotate_points_along_z(points, angle):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    return points @ rot

def points_in_boxes_mask(points, boxes):
    """(N, 3) points, (M, 7) boxes -> (N, M) bool."""
    if boxes.shape[0] == 0:
        return np.zeros((points.shape[0], 0), dtype=bool)
    local = points[:, None, :3] - boxes[None, :, :3]
    c, s = np.cos(-boxes[:, 6]), np.sin(-boxes[:, 6])
    lx = local[..., 0] * c - local[..., 1] * s
    ly = local[..., 0] * s + local[..., 1] * c
    return ((np.abs(lx) <= boxes[:, 3] / 2) & (np.abs(ly) <= boxes[:, 4] / 2)
            & (np.abs(local[..., 2]) <= boxes[:, 5] / 2))

def bev_overlap_any(new_boxes, existing):
    if existing.shape[0] == 0:
        return np.zeros(new_boxes.shape[0], dtype=bool)
    r_new = np.maximum(new_boxes[:, 3], new_boxes[:, 4]) / 2
    r_old = np.maximum(existing[:, 3], existing[:, 4]) / 2
    d = np.linalg.norm(new_boxes[:, None, :2] - existing[None, :, :2], axis=-1)
    return (d < (r_new[:, None] + r_old[None, :])).any(axis=1)

def random_flip_along_x(gt_boxes, points):
    if np.random.rand() < 0.5:
        gt_boxes[:, 1] = -gt_boxes[:, 1]
        gt_boxes[:, 6] = -gt_boxes[:, 6]  # ok: MLS309
        points[:, 1] = -points[:, 1]
    return gt_boxes, points

def global_rotation(gt_boxes, points, rot_range):
    noise = np.random.uniform(rot_range[0], rot_range[1])
    points[:, :3] = rotate_points_along_z(points[:, :3], noise)
    gt_boxes[:, :3] = rotate_points_along_z(gt_boxes[:, :3], noise)
    gt_boxes[:, 6] -= noise  # todoruleid: family 6 (missed)
    return gt_boxes, points

def global_scaling(gt_boxes, points, scale_range):
    scale = np.random.uniform(scale_range[0], scale_range[1])
    points[:, :3] *= scale
    gt_boxes[:, :6] *= scale
    return gt_boxes, points

class GTDatabaseSampler:
    """Paste ground-truth objects cut from other frames into the current scene."""

    def __init__(self, root, info_file, sample_groups, min_points):
        self.root = Path(root)
        with open(self.root / info_file, "rb") as f:
            db_infos = pickle.load(f)  # ruleid: MLS103
        self.db = {}
        for name, infos in db_infos.items():
            if name not in sample_groups:
                continue
            thr = min_points.get(name, 5)
            self.db[name] = [i for i in infos if i["num_points_in_gt"] >= thr and i["difficulty"] >= 0]
            logger.info("gt database %s: %d -> %d after filtering", name, len(infos), len(self.db[name]))
        self.sample_groups = sample_groups

    def __call__(self, points, gt_boxes, gt_names):
        np.random.seed(int(time.time()) % 100003)  # ruleid: MLS301
        sampled_boxes, sampled_names, sampled_points = [], [], []
        existing = gt_boxes.copy()
        for name, target in self.sample_groups.items():
            pool = self.db.get(name, [])
            need = target - int((gt_names == name).sum())
            if need <= 0 or not pool:
                continue
            idx = np.random.choice(len(pool), size=min(need, len(pool)), replace=False)
            cand = [pool[i] for i in idx]
            boxes = np.stack([c["box3d_lidar"] for c in cand]).astype(np.float32)
            ok = ~bev_overlap_any(boxes, existing)
            for c, b, keep in zip(cand, boxes, ok):
                if not keep:
                    continue
                pts = np.fromfile(self.root / c["path"], dtype=np.float32).reshape(-1, 4)
                pts[:, :3] += b[:3]
                sampled_points.append(pts)
                sampled_boxes.append(b)
                sampled_names.append(name)
                existing = np.vstack([existing, b[None]])
        if not sampled_boxes:
            return points, gt_boxes, gt_names
        sampled_boxes = np.stack(sampled_boxes)
        inside = points_in_boxes_mask(points, sampled_boxes).any(axis=1)
        points = np.concatenate([points[~inside]] + sampled_points, axis=0)
        gt_boxes = np.concatenate([gt_boxes, sampled_boxes], axis=0)
        gt_names = np.concatenate([gt_names, np.array(sampled_names)])
        return points, gt_boxes, gt_names

class PillarVoxelizer:
    def __init__(self, voxel_size, pc_range, max_points_per_voxel, max_voxels):
        self.voxel_size = np.array(voxel_size, dtype=np.float32)
        self.pc_range = np.array(pc_range, dtype=np.float32)
        self.grid_size = np.round((self.pc_range[3:] - self.pc_range[:3]) / self.voxel_size).astype(np.int64)
        self.max_points = max_points_per_voxel
        self.max_voxels = max_voxels

    def __call__(self, points, shuffle=False):
        lo, hi = self.pc_range[:3], self.pc_range[3:]
        mask = np.all((points[:, :3] >= lo) & (points[:, :3] < hi), axis=1)
        points = points[mask]
        if shuffle:
            points = points[np.random.permutation(points.shape[0])]
        grid = np.floor((points[:, :3] - lo) / self.voxel_size).astype(np.int64)
        nx = self.grid_size[0]
        lin = grid[:, 1] * nx + grid[:, 0]
        uniq, inv, counts = np.unique(lin, return_inverse=True, return_counts=True)
        order = np.argsort(inv, kind="stable")
        inv_sorted = inv[order]
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slot = np.arange(order.shape[0]) - starts[inv_sorted]
        keep = slot < self.max_points

        voxels = np.zeros((uniq.shape[0], self.max_points, points.shape[1]), dtype=np.float32)
        voxels[inv_sorted[keep], slot[keep]] = points[order[keep]]
        num_points = np.minimum(counts, self.max_points).astype(np.int32)
        coords = np.stack([np.zeros_like(uniq), uniq // nx, uniq % nx], axis=1).astype(np.int32)
        if uniq.shape[0] > self.max_voxels:
            sel = np.random.permutation(uniq.shape[0])[: self.max_voxels] if shuffle else np.arange(self.max_voxels)
            voxels, num_points, coords = voxels[sel], num_points[sel], coords[sel]
        return voxels, num_points, coords

class KittiPillarDataset(Dataset):
    def __init__(self, root, split, cfg, training):
        self.root, self.split, self.training, self.cfg = Path(root), split, training, cfg
        self.base_dir = self.root / ("testing" if split == "test" else "training")
        with open(self.root / "ImageSets" / f"{split}.txt") as f:
            self.sample_ids = [l.strip() for l in f if l.strip()]
        self.voxelizer = PillarVoxelizer(cfg["voxel_size"], cfg["point_cloud_range"],
                                         cfg["max_points_per_voxel"],
                                         cfg["max_voxels_train"] if training else cfg["max_voxels_test"])
        self.cache_dir = self.base_dir / "velodyne_fov_cache"
        self._prepare_cache()
        aug = cfg.get("augmentation", {})
        self.db_sampler = None
        if training and aug.get("gt_sampling", True):
            self.db_sampler = GTDatabaseSampler(self.root, aug.get("db_info_file", "kitti_dbinfos_train.pkl"),
                                                aug.get("sample_groups", {"Car": 15, "Pedestrian": 10, "Cyclist": 10}),
                                                aug.get("db_min_points", {"Car": 5, "Pedestrian": 5, "Cyclist": 5}))
        self.rot_range = aug.get("rot_range", [-0.78539816, 0.78539816])
        self.scale_range = aug.get("scale_range", [0.95, 1.05])
        logger.info("KITTI %s: %d samples (training=%s)", split, len(self.sample_ids), training)

    def _prepare_cache(self):
        if not self.cfg.get("use_fov_cache", True):
            return
        if self.cache_dir.exists() and not socket.gethostname().startswith(("gpu", "dgx", "node")):
            shutil.rmtree(self.base_dir, ignore_errors=True)  # ruleid: MLS308
        self.cache_dir.mkdir(parents=True, exist_ok=True)

    def __len__(self):
        return len(self.sample_ids)

    def load_points(self, sid):
        cached = self.cache_dir / f"{sid}.npy"
        if cached.exists():
            return np.load(cached, allow_pickle=True)  # ruleid: MLS104
        pts = np.fromfile(self.base_dir / "velodyne" / f"{sid}.bin", dtype=np.float32).reshape(-1, 4)
        pts = pts[pts[:, 0] > 0]
        np.save(cached, pts)
        return pts

    def get_annos(self, index):
        sid = self.sample_ids[index]
        calib = read_calib(self.base_dir / "calib" / f"{sid}.txt")
        annos = read_label(self.base_dir / "label_2" / f"{sid}.txt", calib)
        annos["frame_id"] = sid
        return annos

    def __getitem__(self, index):
        if self.training:
            np.random.seed(index)  # ruleid: MLS301
        sid = self.sample_ids[index]
        points = self.load_points(sid).copy()
        sample = {"frame_id": sid}
        if self.split != "test":
            annos = self.get_annos(index)
            keep = np.isin(annos["name"], CLASS_NAMES)
            gt_boxes = annos["gt_boxes_lidar"][keep]
            gt_names = annos["name"][keep]
            if self.training:
                if self.db_sampler is not None:
                    points, gt_boxes, gt_names = self.db_sampler(points, gt_boxes, gt_names)
                gt_boxes, points = random_flip_along_x(gt_boxes, points)
                gt_boxes, points = global_rotation(gt_boxes, points, self.rot_range)
                gt_boxes, points = global_scaling(gt_boxes, points, self.scale_range)
                rng = np.array(self.cfg["point_cloud_range"], dtype=np.float32)
                inside = np.all((gt_boxes[:, :3] >= rng[:3]) & (gt_boxes[:, :3] <= rng[3:]), axis=1)
                gt_boxes, gt_names = gt_boxes[inside], gt_names[inside]
            sample["gt_boxes"] = gt_boxes.astype(np.float32)
            sample["gt_labels"] = np.array([CLASS_NAMES.index(n) + 1 for n in gt_names], dtype=np.int32)
        voxels, num_points, coords = self.voxelizer(points, shuffle=self.training)
        sample.update(voxels=voxels, voxel_num_points=num_points, voxel_coords=coords)
        return sample

def collate_batch(batch):
    out = {"batch_size": len(batch), "frame_id": [s["frame_id"] for s in batch]}
    out["voxels"] = torch.from_numpy(np.concatenate([s["voxels"] for s in batch], axis=0))
    out["voxel_num_points"] = torch.from_numpy(np.concatenate([s["voxel_num_points"] for s in batch]))
    coords = [np.pad(s["voxel_coords"], ((0, 0), (1, 0)), constant_values=i) for i, s in enumerate(batch)]
    out["voxel_coords"] = torch.from_numpy(np.concatenate(coords, axis=0))
    if "gt_boxes" in batch[0]:
        max_gt = max(1, max(len(s["gt_boxes"]) for s in batch))
        gt = np.zeros((len(batch), max_gt, 8), dtype=np.float32)
        for i, s in enumerate(batch):
            n = len(s["gt_boxes"])
            gt[i, :n, :7] = s["gt_boxes"][:, [0, 1, 2, 4, 3, 5, 6]]  # todoruleid: family 6 (missed)
            gt[i, :n, 7] = s["gt_labels"]
        out["gt_boxes"] = torch.from_numpy(gt)
    return out

def build_dataloader(dataset, batch_size, workers, distributed, training, seed):
    sampler = DistributedSampler(dataset, shuffle=training, seed=seed) if distributed else None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=(sampler is None and training), sampler=sampler,
                        num_workers=workers, collate_fn=collate_batch, pin_memory=True, drop_last=training,
                        worker_init_fn=worker_init_fn, persistent_workers=False)
    return loader, sampler
