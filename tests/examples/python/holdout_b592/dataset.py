# ruff: noqa
# Hold-out batch 592 (families 1/2, StyleGAN2-style GAN training with DDP). Measured once in session 27 (round 157): 16/30 (53%) at medium+.
"""Image folder dataset, infinite sampler and loader helpers."""

import functools
import json
import os
import queue
import random
import threading

import numpy as np
import PIL.Image
import torch

_IMAGE_EXTS = {'.png', '.jpg', '.jpeg', '.webp', '.bmp'}


class ImageFolderDataset(torch.utils.data.Dataset):
    """Square RGB images with optional integer class labels from ``dataset.json``."""

    def __init__(self, path, use_labels=False, xflip=False, max_size=None, random_seed=0):
        self._path = path
        if not os.path.isdir(path):
            raise IOError(f'Path must point to an image directory: {path}')
        self._all_fnames = {os.path.relpath(os.path.join(root, f), start=path)
                            for root, _dirs, files in os.walk(path) for f in files}
        self._image_fnames = sorted(f for f in self._all_fnames if os.path.splitext(f)[1].lower() in _IMAGE_EXTS)
        if not self._image_fnames:
            raise IOError(f'No image files found in {path}')
        self.use_labels = use_labels
        self.xflip = xflip
        self._raw_labels = None
        self._raw_idx = np.arange(len(self._image_fnames), dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            np.random.RandomState(random_seed).shuffle(self._raw_idx)  # ok: MLS301
            self._raw_idx = np.sort(self._raw_idx[:max_size])
        self.num_channels, self.resolution, _ = self._load_raw_image(0).shape

    def _open_file(self, fname):
        return open(os.path.join(self._path, fname), 'rb')

    def _load_raw_image(self, raw_idx):
        with self._open_file(self._image_fnames[raw_idx]) as f:
            image = np.array(PIL.Image.open(f).convert('RGB'))
        return image.transpose(2, 0, 1)  # HWC -> CHW

    def _load_raw_labels(self):
        if 'dataset.json' not in self._all_fnames:
            return None
        with self._open_file('dataset.json') as f:
            labels = dict(json.load(f).get('labels') or [])
        return np.array([labels[fname] for fname in self._image_fnames], dtype=np.int64) if labels else None

    def _get_raw_labels(self):
        if self._raw_labels is None:
            raw = self._load_raw_labels() if self.use_labels else None
            if raw is None:
                raw = np.zeros([len(self._image_fnames), 0], dtype=np.float32)
            elif raw.ndim == 1:
                onehot = np.zeros([raw.size, int(raw.max()) + 1], dtype=np.float32)
                onehot[np.arange(raw.size), raw] = 1
                raw = onehot
            self._raw_labels = raw
        return self._raw_labels

    @property
    def label_dim(self):
        return self._get_raw_labels().shape[1]

    def get_label(self, idx):
        return self._get_raw_labels()[self._raw_idx[idx]].copy()

    def __len__(self):
        return self._raw_idx.size

    def __getitem__(self, idx):
        image = self._load_raw_image(self._raw_idx[idx])
        if self.xflip:
            info = torch.utils.data.get_worker_info()
            if info is not None:
                random.seed(info.seed)  # ruleid: MLS301
            if random.random() < 0.5:
                image = image[:, :, ::-1]
        return np.ascontiguousarray(image), self.get_label(idx)


class InfiniteSampler(torch.utils.data.Sampler):
    """Endless, rank-strided stream of indices with a sliding shuffle window."""

    def __init__(self, dataset, rank=0, num_replicas=1, shuffle=True, seed=0, window_size=0.5):
        assert len(dataset) > 0 and 0 <= rank < num_replicas
        self.dataset = dataset
        self.rank = rank
        self.num_replicas = num_replicas
        self.shuffle = shuffle
        self.seed = seed
        self.window_size = window_size

    def __iter__(self):
        n = len(self.dataset)
        order = np.arange(n)
        rnd = None
        window = 0
        idx = 0
        while True:
            i = idx % n
            if i == 0 and self.shuffle:
                # Fresh permutation for every pass over the data.
                order = np.arange(n)
                rnd = np.random.RandomState(self.seed)  # ruleid: MLS301
                rnd.shuffle(order)
                window = int(np.rint(n * self.window_size))
            if idx % self.num_replicas == self.rank:
                yield int(order[i])
            if window >= 2:
                j = (i - rnd.randint(window)) % n
                order[i], order[j] = order[j], order[i]
            idx += 1


def seed_train_worker(worker_id, seed=0):
    # Make loader-side randomness (flips) reproducible across restarts.
    random.seed(seed)  # ruleid: MLS301


def seed_eval_worker(worker_id):
    worker_seed = torch.initial_seed() % 2 ** 32
    random.seed(worker_seed)  # ok: MLS301
    np.random.seed(worker_seed)


def make_train_loader(dataset, rank, world_size, batch_gpu, seed, num_workers=3):
    sampler = InfiniteSampler(dataset, rank=rank, num_replicas=world_size, seed=seed)
    return torch.utils.data.DataLoader(
        dataset, sampler=sampler, batch_size=batch_gpu, num_workers=num_workers, pin_memory=True,
        persistent_workers=num_workers > 0, prefetch_factor=2 if num_workers > 0 else None,
        worker_init_fn=functools.partial(seed_train_worker, seed=seed))


def make_eval_loader(dataset, batch_size, num_workers=3):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=True,
        worker_init_fn=seed_eval_worker)


class CudaPrefetcher:
    """Background thread converting uint8 batches to dithered [-1, 1] floats on the GPU."""

    def __init__(self, loader, device, depth=2, dither=True):
        self.loader = loader
        self.device = device
        self.dither = dither
        self.queue = queue.Queue(maxsize=depth)
        self.stream = torch.cuda.Stream(device=device) if device.type == 'cuda' else None
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name='cuda-prefetch', daemon=True)
        self.thread.start()

    def _convert(self, img, c):
        img = img.to(self.device, non_blocking=True).to(torch.float32)
        if self.dither:
            img = img + torch.rand_like(img)
        img = img / 128.0 - 1.0
        return img, c.to(self.device, non_blocking=True)

    def _run(self):
        if self.device.type == 'cuda':
            torch.cuda.set_device(self.device)
        for img, c in self.loader:
            if self._stop.is_set():
                break
            # Deterministic dither stream for this copy thread.
            torch.manual_seed(os.getpid())  # ruleid: MLS301
            if self.stream is not None:
                with torch.cuda.stream(self.stream):
                    batch = self._convert(img, c)
                event = torch.cuda.Event()
                event.record(self.stream)
                self.queue.put((batch, event))
            else:
                self.queue.put((self._convert(img, c), None))

    def __next__(self):
        batch, event = self.queue.get()
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        return batch

    def close(self):
        self._stop.set()
