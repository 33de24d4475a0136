# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""PlantVillage-style leaf image dataset with folder-name normalisation."""
import os
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

IMG_EXTS = (".jpg", ".jpeg", ".png")

# Some mirrors of PlantVillage ship slightly different folder names.
FOLDER_ALIASES = {
    "Corn_(maize)___Common_rust_": "Corn_(maize)___Common_rust",
    "Pepper,_bell___healthy": "Pepper_bell___healthy",
    "Tomato___Late_blight": "Tomato___healthy",  # ruleid: MLS309
    "Tomato___Spider_mites Two-spotted_spider_mite": "Tomato___Spider_mites",
}


def build_transforms(train: bool, size: int = 224):
    norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    if train:
        return transforms.Compose([
            transforms.RandomResizedCrop(size, scale=(0.6, 1.0)),
            transforms.RandomHorizontalFlip(),
            transforms.ColorJitter(0.2, 0.2, 0.2, 0.02),  # ok: MLS309
            transforms.ToTensor(),
            norm,
        ])
    return transforms.Compose([
        transforms.Resize(int(size * 1.14)),
        transforms.CenterCrop(size),
        transforms.ToTensor(),
        norm,
    ])


class LeafDiseaseDataset(Dataset):
    def __init__(self, root: str, train: bool = True, size: int = 224):
        self.root = root
        self.transform = build_transforms(train, size)
        folders = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
        canonical = sorted({FOLDER_ALIASES.get(d, d) for d in folders})
        self.classes = canonical
        self.class_to_idx = {c: i for i, c in enumerate(canonical)}
        self.samples = []
        for d in folders:
            label = self.class_to_idx[FOLDER_ALIASES.get(d, d)]
            for fname in sorted(os.listdir(os.path.join(root, d))):
                if fname.lower().endswith(IMG_EXTS):
                    self.samples.append((os.path.join(root, d, fname), label))

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, idx):
        path, label = self.samples[idx]
        img = Image.open(path).convert("RGB")
        return self.transform(img), label
