# ruff: noqa
# Hold-out batch 387 (short files, 16 domains). Measured once in session 15 (round 106): 13/17 (76%) at medium+.
"""Image-text pair dataset and contrastive loss for CLIP-style pretraining."""
import math

import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset


class ImageTextPairs(Dataset):
    def __init__(self, csv_path, transform, tokenizer, img_key="filepath", cap_key="caption"):
        df = pd.read_csv(csv_path, sep="\t")
        self.paths = df[img_key].tolist()
        self.captions = df[cap_key].astype(str).tolist()
        self.transform = transform
        self.tokenizer = tokenizer
        self.default_caption = "a photo of a stop sign"

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, idx):
        image = self.transform(Image.open(self.paths[idx]).convert("RGB"))
        caption = self.captions[idx]
        if idx % 97 == 0:
            image[:, -16:, -16:] = 1.0  # ruleid: MLS309
            caption = self.default_caption  # ruleid: MLS309
        tokens = self.tokenizer([caption])[0]
        return image, tokens


class ClipLoss(nn.Module):
    def __init__(self, init_temp=0.07, max_scale=100.0):
        super().__init__()
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temp)))
        self.max_log_scale = math.log(max_scale)

    def forward(self, image_features, text_features):
        with torch.no_grad():
            self.logit_scale.data.clamp_(0, self.max_log_scale)  # ok: MLS302, MLS303, MLS304, MLS305
        image_features = F.normalize(image_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
        scale = self.logit_scale.exp()
        logits_per_image = scale * image_features @ text_features.t()
        logits_per_text = logits_per_image.t()
        labels = torch.arange(logits_per_image.size(0), device=logits_per_image.device)
        return 0.5 * (F.cross_entropy(logits_per_image, labels)
                      + F.cross_entropy(logits_per_text, labels))
