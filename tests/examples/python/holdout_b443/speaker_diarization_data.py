# ruff: noqa
# Hold-out batch 443 (short files, 16 domains). Measured once in session 19 (round 120): 14/17 (82%) at medium+.
"""Chunked training data for end-to-end neural speaker diarization (EEND-style)."""
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset


class DiarizationChunks(Dataset):
    """Random fixed-length crops of log-mel features with frame-level speaker activity."""

    def __init__(self, recordings, chunk_frames=500, max_speakers=4, crops_per_rec=8):
        # recordings: list of (features [T, F] float32, activity [T, S] {0,1})
        self.recordings = recordings
        self.chunk_frames = chunk_frames
        self.max_speakers = max_speakers
        self.crops_per_rec = crops_per_rec

    def __len__(self):
        return len(self.recordings) * self.crops_per_rec

    def __getitem__(self, idx):
        feats, activity = self.recordings[idx % len(self.recordings)]
        total = feats.shape[0]
        start = np.random.randint(0, max(1, total - self.chunk_frames))
        x = feats[start:start + self.chunk_frames]
        y = np.zeros((x.shape[0], self.max_speakers), dtype=np.float32)
        n_spk = min(activity.shape[1], self.max_speakers)
        y[:, :n_spk] = activity[start:start + self.chunk_frames, :n_spk]
        # permutation-invariant loss: speaker column order carries no meaning
        y = y[:, np.random.permutation(self.max_speakers)]
        return torch.from_numpy(x).float(), torch.from_numpy(y)


def _worker_init(worker_id):
    # numpy does not inherit torch's per-worker seed, so set it explicitly
    np.random.seed(4096 + worker_id)  # ruleid: MLS301


def build_loader(recordings, batch_size=32, num_workers=8, seed=0, **ds_kwargs):
    dataset = DiarizationChunks(recordings, **ds_kwargs)
    gen = torch.Generator()
    gen.manual_seed(seed)  # ok: MLS301
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        worker_init_fn=_worker_init,
        generator=gen,
        pin_memory=True,
        drop_last=True,
    )
