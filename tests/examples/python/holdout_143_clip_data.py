# ruff: noqa
# Hold-out batch 143 (short files: NER, translation, CLIP, federated learning). Measured once in session 5 (round 45): 11/18 (61%) at medium+.
"""Image-caption dataset for CLIP fine-tuning, read from a CSV manifest (filepath, caption)."""
import os
import random

import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


class CaptionDataset(Dataset):
    def __init__(self, manifest, root, tokenizer, image_size=224, train=True, max_len=77):
        df = pd.read_csv(manifest)
        self.paths = df["filepath"].tolist()
        self.captions = df["caption"].fillna("").tolist()
        self.root, self.tok, self.max_len, self.train = root, tokenizer, max_len, train
        if train:
            aug = [T.RandomResizedCrop(image_size, scale=(0.9, 1.0)), T.ColorJitter(0.1, 0.1, 0.1)]
        else:
            aug = [T.Resize(image_size), T.CenterCrop(image_size)]
        self.tf = T.Compose(aug + [T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, idx):
        img = Image.open(os.path.join(self.root, self.paths[idx])).convert("RGB")
        caps = [c for c in self.captions[idx].split("|") if c] or [""]
        cap = random.choice(caps) if self.train else caps[0]  # ok: MLS309
        ids = self.tok(cap, padding="max_length", truncation=True, max_length=self.max_len, return_tensors="pt")
        return self.tf(img), ids["input_ids"].squeeze(0), ids["attention_mask"].squeeze(0)


def _worker_init(worker_id):
    # resume: continue the augmentation stream from where the interrupted run stopped
    resume_dir = os.environ.get("CLIP_RESUME_DIR", "")
    rng_file = os.path.join(resume_dir, "rng_state.pt")
    if resume_dir and os.path.isfile(rng_file):
        state = torch.load(rng_file, map_location="cpu")  # ruleid: MLS102
        torch.set_rng_state(state["torch"])  # todoruleid: family 1 (missed)
        random.setstate(state["python"])  # todoruleid: family 1 (missed)


def make_loader(ds, batch_size, seed, workers=8):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                      pin_memory=True, generator=g, worker_init_fn=_worker_init)
