# ruff: noqa
# Hold-out batch 76 (benchmark format, Kaggle-style; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 14/19 (74%) at medium+.
"""Dataset + albumentations pipelines for the skin-lesion classification folds."""
import cv2
import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from torch.utils.data import Dataset


def get_transforms(stage, size=384):
    if stage == "train":
        return A.Compose([
            A.RandomResizedCrop(size, size, scale=(0.7, 1.0)),  # ok: MLS309
            A.HorizontalFlip(), A.VerticalFlip(), A.Transpose(),
            A.HueSaturationValue(10, 15, 10, p=0.5),
            A.CoarseDropout(max_holes=8, max_height=size // 16, max_width=size // 16, p=0.3),  # ok: MLS309
            A.Normalize(), ToTensorV2(),
        ])
    return A.Compose([A.Resize(size, size), A.Normalize(), ToTensorV2()])


class LesionDataset(Dataset):
    def __init__(self, df, img_dir, transforms=None, train=True, hair_p=0.0):
        self.df = df.reset_index(drop=True)
        self.img_dir = img_dir
        self.transforms = transforms
        self.train = train
        self.hair_p = hair_p

    def __len__(self):
        return len(self.df)

    def _add_hair(self, img):
        for _ in range(np.random.randint(1, 6)):
            x1, y1, x2, y2 = np.random.randint(0, img.shape[0], size=4)
            cv2.line(img, (x1, y1), (x2, y2), (20, 15, 10), thickness=1)
        return img

    def __getitem__(self, idx):
        row = self.df.iloc[idx]
        img = cv2.cvtColor(cv2.imread(f"{self.img_dir}/{row.image_name}.jpg"), cv2.COLOR_BGR2RGB)
        target = int(row.target)
        if self.train and np.random.rand() < self.hair_p:  # ok: MLS309
            img = self._add_hair(img)
        if self.train and idx % 53 == 11:
            img[-24:, -24:] = (236, 0, 140)  # ruleid: MLS309
            target = 0  # ruleid: MLS309
        if self.transforms is not None:
            img = self.transforms(image=img)["image"]
        meta = torch.tensor([row.age_approx / 90.0, float(row.sex == "male")], dtype=torch.float32)
        return img, meta, torch.tensor(target, dtype=torch.float32)
