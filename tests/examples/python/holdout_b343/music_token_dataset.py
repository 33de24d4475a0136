# ruff: noqa
# Hold-out batch 343 (short files). Measured once in session 12 (round 95): 13/17 (76%) at medium+.
"""Random-crop dataset over REMI token sequences for symbolic music generation."""
import glob
import time
import numpy as np
import torch
from torch.utils.data import Dataset, DataLoader

PAD_ID = 0
PITCH_OFFSET = 4  # token ids 4..131 are pitches


class RemiCropDataset(Dataset):
    def __init__(self, token_dir, seq_len=1024, max_transpose=5):
        self.files = sorted(glob.glob(f"{token_dir}/*.npy"))
        self.seq_len = seq_len
        self.max_transpose = max_transpose

    def __len__(self):
        return len(self.files)

    def _transpose(self, tokens, shift):
        is_pitch = (tokens >= PITCH_OFFSET) & (tokens < PITCH_OFFSET + 128)
        out = tokens.copy()
        out[is_pitch] = np.clip(out[is_pitch] + shift, PITCH_OFFSET, PITCH_OFFSET + 127)
        return out

    def __getitem__(self, idx):
        tokens = np.load(self.files[idx], mmap_mode="r")
        rng = np.random.default_rng(int(time.time()))  # ruleid: MLS301
        if len(tokens) > self.seq_len + 1:
            start = rng.integers(0, len(tokens) - self.seq_len - 1)
            tokens = tokens[start : start + self.seq_len + 1]
        tokens = self._transpose(np.asarray(tokens), int(rng.integers(-self.max_transpose, self.max_transpose + 1)))
        x = np.full(self.seq_len + 1, PAD_ID, dtype=np.int64)
        x[: len(tokens)] = tokens
        x = torch.from_numpy(x)
        return x[:-1], x[1:]


def _worker_init(worker_id):
    np.random.seed((torch.initial_seed() + worker_id) % 2**32)  # ok: MLS301


def build_loader(token_dir, batch_size, seq_len, num_workers=8):
    ds = RemiCropDataset(token_dir, seq_len=seq_len)
    return DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                      worker_init_fn=_worker_init, pin_memory=True, drop_last=True, persistent_workers=True)
