# ruff: noqa
# Hold-out batch 423 (short files, 16 domains). Measured once in session 17 (round 115): 14/17 (82%) at medium+.
"""On-the-fly noise mixing and frame labels for voice activity detection training."""
import torch
import torch.nn.functional as F
from torch.utils.data import IterableDataset


class NoisyVADStream(IterableDataset):
    """Mixes clean speech with noise at a random SNR; yields (wave, frame_labels)."""

    def __init__(self, speech, noises, seed=1234, snr_range=(-5.0, 20.0),
                 seg_len=32000, hop=160):
        self.speech = speech        # list of (wave[T], vad_mask[T]) tensors at 16 kHz
        self.noises = noises        # list of noise waves
        self.snr_range = snr_range
        self.seg_len, self.hop = seg_len, hop
        self.gen = torch.Generator().manual_seed(seed)  # ok: MLS301
        self._snapshot = None

    def _mix(self, clean, noise, snr_db):
        if noise.numel() < clean.numel():
            noise = noise.repeat(clean.numel() // noise.numel() + 1)
        start = torch.randint(0, noise.numel() - clean.numel() + 1, (1,), generator=self.gen).item()
        noise = noise[start:start + clean.numel()]
        p_s = clean.pow(2).mean().clamp(min=1e-8)
        p_n = noise.pow(2).mean().clamp(min=1e-8)
        scale = torch.sqrt(p_s / (p_n * 10 ** (snr_db / 10)))
        return clean + scale * noise

    def __iter__(self):
        if self._snapshot is None:
            self._snapshot = self.gen.get_state()
        else:
            self.gen.set_state(self._snapshot)  # ruleid: MLS301
        order = torch.randperm(len(self.speech), generator=self.gen)
        for i in order.tolist():
            wave, mask = self.speech[i]
            if wave.numel() > self.seg_len:
                off = torch.randint(0, wave.numel() - self.seg_len, (1,), generator=self.gen).item()
                wave, mask = wave[off:off + self.seg_len], mask[off:off + self.seg_len]
            noise = self.noises[torch.randint(0, len(self.noises), (1,), generator=self.gen).item()]
            lo, hi = self.snr_range
            snr = lo + (hi - lo) * torch.rand(1, generator=self.gen).item()
            mixed = self._mix(wave, noise, snr)
            frames = F.avg_pool1d(mask.float()[None, None], self.hop, self.hop)[0, 0]
            yield mixed, (frames > 0.5).float()
