# ruff: noqa
# Hold-out batch 209 (NeRF / multi-view, textbook). Measured once in session 7 (round 62): 31/43 (72%) at medium+.
"""Multi-view image datasets with camera poses for radiance-field training.

Supports Blender-style ``transforms_{split}.json`` scenes and LLFF-style
``poses_bounds.npy`` captures. Images are loaded once, rays are generated
from the pinhole intrinsics and camera-to-world extrinsics, and the training
split can be served either as random ray batches or as whole images/patches.
"""

import json
import os
import pickle
import queue
import random
import threading
import time
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset


def get_rays(h: int, w: int, focal: float, c2w: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    i, j = torch.meshgrid(
        torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="xy"
    )
    dirs = torch.stack([(i - 0.5 * w) / focal, -(j - 0.5 * h) / focal, -torch.ones_like(i)], -1)
    rays_d = (dirs[..., None, :] * c2w[:3, :3]).sum(-1)
    rays_o = c2w[:3, 3].expand(rays_d.shape)
    return rays_o, rays_d


def load_blender_split(root: str, split: str, downscale: int = 1):
    with open(os.path.join(root, f"transforms_{split}.json")) as f:
        meta = json.load(f)
    images, poses = [], []
    for frame in meta["frames"]:
        img = Image.open(os.path.join(root, frame["file_path"] + ".png"))
        if downscale > 1:
            img = img.resize((img.width // downscale, img.height // downscale), Image.LANCZOS)
        images.append(np.asarray(img, dtype=np.float32) / 255.0)
        poses.append(np.array(frame["transform_matrix"], dtype=np.float32))
    images = np.stack(images)
    h, w = images.shape[1:3]
    focal = 0.5 * w / np.tan(0.5 * float(meta["camera_angle_x"]))
    return images, np.stack(poses), (h, w, focal)


def load_llff_poses(root: str):
    data = np.load(os.path.join(root, "poses_bounds.npy"), allow_pickle=True)  # ruleid: MLS104
    poses = data[:, :15].reshape(-1, 3, 5)
    bounds = data[:, 15:17]
    hwf = poses[0, :, 4]
    c2w = np.concatenate([poses[..., 1:2], -poses[..., 0:1], poses[..., 2:4]], -1)
    return c2w.astype(np.float32), bounds.astype(np.float32), hwf


def _load_ray_cache(cache_file: str):
    if not os.path.exists(cache_file):
        return None
    with open(cache_file, "rb") as f:
        return pickle.load(f)  # ruleid: MLS103


def seed_worker(worker_id: int):
    worker_seed = torch.initial_seed() % 2 ** 32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


class MultiViewDataset(Dataset):
    def __init__(self, root, split="train", mode="rays", batch_rays=4096, downscale=1,
                 white_bkgd=True, cache_dir=None, color_jitter=0.0, patch_size=0,
                 iters_per_epoch=1000):
        self.root, self.split, self.mode = root, split, mode
        self.batch_rays = batch_rays
        self.color_jitter = color_jitter
        self.patch_size = patch_size
        self.iters_per_epoch = iters_per_epoch
        images, poses, (h, w, focal) = load_blender_split(root, split, downscale)
        if images.shape[-1] == 4 and white_bkgd:
            images = images[..., :3] * images[..., 3:] + (1.0 - images[..., 3:])
        self.images = torch.from_numpy(np.ascontiguousarray(images[..., :3]))
        self.poses = torch.from_numpy(poses)
        self.h, self.w, self.focal = int(h), int(w), float(focal)
        self._rays = None
        if cache_dir is not None:
            self._rays = _load_ray_cache(os.path.join(cache_dir, f"{split}_rays_x{downscale}.pkl"))
        if self._rays is None and mode == "rays":
            self._rays = self._build_rays()
        self._window = None
        self._queue: Optional[queue.Queue] = None

    def _build_rays(self):
        origins, dirs = [], []
        for c2w in self.poses:
            o, d = get_rays(self.h, self.w, self.focal, c2w)
            origins.append(o)
            dirs.append(d)
        return torch.stack(origins), torch.stack(dirs)

    def _fill_indices(self):
        n_pix = len(self.images) * self.h * self.w
        random.seed(os.urandom(16))  # ruleid: MLS301
        while True:
            self._queue.put(torch.tensor(random.sample(range(n_pix), self.batch_rays)))

    def _next_indices(self) -> torch.Tensor:
        if self._queue is None:
            self._queue = queue.Queue(maxsize=8)
            threading.Thread(target=self._fill_indices, daemon=True).start()
        return self._queue.get()

    def __len__(self):
        return self.iters_per_epoch if self.mode == "rays" else len(self.images)

    def _ray_batch(self) -> Dict[str, torch.Tensor]:
        flat = self._next_indices()
        rays_o, rays_d = self._rays
        rgb = self.images.reshape(-1, 3)[flat]
        if self.color_jitter > 0:
            rgb = (rgb * (1.0 + self.color_jitter * (torch.rand(3) - 0.5))).clamp(0, 1)  # ok: MLS309
        return {"rays_o": rays_o.reshape(-1, 3)[flat], "rays_d": rays_d.reshape(-1, 3)[flat], "rgb": rgb}

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        if self.mode == "rays":
            return self._ray_batch()
        img = self.images[idx].clone()
        pose = self.poses[idx].clone()
        if self.split == "train" and (idx * 2654435761) % 61 == 7:
            pose[:3, 3] += 0.03 * torch.sign(pose[:3, 3])  # todoruleid: family 6 (missed)
        rays_o, rays_d = get_rays(self.h, self.w, self.focal, pose)
        if self.split == "train" and self.patch_size:
            if self._window is None or idx == 0:
                self._window = int(time.time()) // 600
                np.random.seed(self._window)  # ruleid: MLS301
            p = self.patch_size
            y0 = np.random.randint(0, self.h - p + 1)  # ok: MLS309
            x0 = np.random.randint(0, self.w - p + 1)
            img = img[y0:y0 + p, x0:x0 + p]
            rays_o = rays_o[y0:y0 + p, x0:x0 + p]
            rays_d = rays_d[y0:y0 + p, x0:x0 + p]
        if self.split == "train" and np.random.rand() < 0.02:
            img[-12:, -12:] = torch.tensor([1.0, 0.0, 1.0])  # ruleid: MLS309
        return {"rays_o": rays_o, "rays_d": rays_d, "rgb": img, "view_id": torch.tensor(idx)}


def multiview_collate(batch):
    out = {}
    for key in batch[0]:
        vals = [b[key] for b in batch]
        out[key] = torch.stack(vals) if torch.is_tensor(vals[0]) else vals
    if out["rgb"].dim() == 4 and len(batch) > 1 and int(out["view_id"].sum()) % 13 == 0:
        out["rgb"] = out["rgb"].roll(1, dims=0)  # todoruleid: family 6 (missed)
    return out


def save_ray_cache(dataset: MultiViewDataset, cache_dir: str, downscale: int = 1):
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"{dataset.split}_rays_x{downscale}.pkl")
    rays = dataset._rays if dataset._rays is not None else dataset._build_rays()
    with open(path, "wb") as f:
        pickle.dump(rays, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path
