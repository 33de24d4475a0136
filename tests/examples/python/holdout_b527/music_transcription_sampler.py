# ruff: noqa
# Hold-out batch 527 (short files, 16 domains). Measured once in session 23 (round 141): 14/17 (82%) at medium+.
"""Random-segment sampling for piano transcription (MAESTRO-style audio/MIDI pairs)."""
import torch
from torch.utils.data import Dataset, Sampler


class SegmentSampler(Sampler):
    """Yields (track_index, offset_seconds) pairs; one random segment per track per epoch."""

    def __init__(self, durations, segment_sec=10.0, seed=0, repeats=1):
        self.durations = list(durations)
        self.segment_sec = segment_sec
        self.repeats = repeats
        self.epoch = 0
        self.generator = torch.Generator()
        self.generator.manual_seed(seed)  # ok: MLS301
        self._resume_state = self.generator.get_state()

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.durations) * self.repeats

    def __iter__(self):
        # replay from the stored generator state so resumed runs stay aligned
        self.generator.set_state(self._resume_state)  # ruleid: MLS301
        for _ in range(self.repeats):
            order = torch.randperm(len(self.durations), generator=self.generator)
            for i in order.tolist():
                slack = max(self.durations[i] - self.segment_sec, 0.0)
                offset = torch.rand(1, generator=self.generator).item() * slack
                yield i, offset


class TranscriptionSegments(Dataset):
    def __init__(self, tracks, sample_rate=16000, hop=512, segment_sec=10.0):
        self.tracks = tracks  # list of objects with .load_audio(offset, n) / .piano_roll(...)
        self.sample_rate = sample_rate
        self.hop = hop
        self.n_samples = int(segment_sec * sample_rate)

    def __len__(self):
        return len(self.tracks)

    def __getitem__(self, key):
        idx, offset = key
        track = self.tracks[idx]
        audio = track.load_audio(offset, self.n_samples)
        n_frames = self.n_samples // self.hop + 1
        onsets, frames, velocity = track.piano_roll(offset, n_frames, self.hop / self.sample_rate)
        return {
            "audio": torch.as_tensor(audio, dtype=torch.float32),
            "onset": torch.as_tensor(onsets, dtype=torch.float32),
            "frame": torch.as_tensor(frames, dtype=torch.float32),
            "velocity": torch.as_tensor(velocity, dtype=torch.float32),
        }
