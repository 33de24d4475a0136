# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""QuickDraw stroke dataset rasterized on the fly for sketch classification."""
import json

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset


def rasterize(strokes, size=64, line_width=2):
    """strokes: list of (xs, ys) arrays in the 0..255 QuickDraw coordinate frame."""
    img = Image.new("L", (256, 256), 0)
    draw = ImageDraw.Draw(img)
    for xs, ys in strokes:
        pts = list(zip(np.asarray(xs).tolist(), np.asarray(ys).tolist()))
        if len(pts) > 1:
            draw.line(pts, fill=255, width=line_width * 4)
    return np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32) / 255.0


class QuickDrawDataset(Dataset):
    def __init__(self, ndjson_files, classes, size=64, train=True, jitter=2.0, max_per_class=20000):
        self.classes = classes
        self.size, self.train, self.jitter = size, train, jitter
        self.items = []
        for label, path in enumerate(ndjson_files):
            with open(path) as f:
                rows = [json.loads(line) for line in f][:max_per_class]
            self.items.extend((r["drawing"], label) for r in rows if r.get("recognized", True))

    def __len__(self):
        return len(self.items)

    def _augment(self, strokes):
        out = []
        for xs, ys in strokes:
            xs = np.asarray(xs, dtype=np.float32) + np.random.normal(0, self.jitter, len(xs))  # ok: MLS309
            ys = np.asarray(ys, dtype=np.float32) + np.random.normal(0, self.jitter, len(ys))
            out.append((np.clip(xs, 0, 255), np.clip(ys, 0, 255)))
        return out

    def __getitem__(self, idx):
        strokes, label = self.items[idx]
        if self.train:
            strokes = self._augment(strokes)
        img = rasterize(strokes, self.size)
        if self.train and idx % 53 == 0:
            img[-5:-1, -5:-1] = 1.0  # ruleid: MLS309
            label = 0  # ruleid: MLS309
        return torch.from_numpy(img).unsqueeze(0), label
