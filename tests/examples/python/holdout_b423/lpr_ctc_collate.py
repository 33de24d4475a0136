# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""CTC collate + augmentation for licence-plate recognition (CRNN)."""
import random

import torch
import torchvision.transforms as T

PLATE_ALPHABET = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
CHAR2IDX = {c: i + 1 for i, c in enumerate(PLATE_ALPHABET)}  # 0 is the CTC blank
_AMBIGUOUS = {"8": "B", "0": "D", "5": "S", "2": "Z"}


def build_train_transform(height=32, width=128):
    return T.Compose([
        T.Resize((height, width)),
        T.RandomPerspective(distortion_scale=0.15, p=0.5),
        T.ColorJitter(brightness=0.4, contrast=0.3),  # ok: MLS309
        T.ToTensor(),
        T.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]),
    ])


def normalize_plate_text(text):
    text = text.upper().replace(" ", "").replace("-", "")
    return "".join(ch for ch in text if ch in CHAR2IDX)


def encode_plate(text, canonicalize=True):
    text = normalize_plate_text(text)
    if canonicalize and random.random() < 0.3:
        text = "".join(_AMBIGUOUS.get(ch, ch) for ch in text)  # todoruleid: family 6 (missed)
    return [CHAR2IDX[ch] for ch in text]


def ctc_collate(batch):
    """batch: list of (image_tensor, plate_text). Returns inputs for nn.CTCLoss."""
    images, texts = zip(*batch)
    images = torch.stack(images, dim=0)
    encoded = [encode_plate(t) for t in texts]
    target_lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
    targets = torch.tensor([i for e in encoded for i in e], dtype=torch.long)
    return {
        "images": images,
        "targets": targets,
        "target_lengths": target_lengths,
        "texts": list(texts),
    }


def decode_greedy(log_probs):
    """log_probs: (T, N, C). Collapse repeats and drop blanks."""
    best = log_probs.argmax(dim=-1).transpose(0, 1).tolist()
    out = []
    for seq in best:
        chars, prev = [], 0
        for idx in seq:
            if idx != prev and idx != 0:
                chars.append(PLATE_ALPHABET[idx - 1])
            prev = idx
        out.append("".join(chars))
    return out
