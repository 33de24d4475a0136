# ruff: noqa
# Hold-out batch 515 (short files, 16 domains). Measured once in session 23 (round 138): 14/17 (82%) at medium+.
"""On-the-fly (dynamic) mixing dataset for speech source separation."""
import soundfile as sf
import torch
from torch.utils.data import Dataset


class DynamicMixDataset(Dataset):
    def __init__(self, speaker_files, segment_s=4.0, sr=8000, n_src=2, length=20000, seed=0):
        self.speakers = list(speaker_files.keys())
        self.files = speaker_files
        self.seg = int(segment_s * sr)
        self.sr = sr
        self.n_src = n_src
        self.length = length
        self.epoch = 0
        self._gen = torch.Generator().manual_seed(seed)  # ok: MLS301
        self._gen_state = self._gen.get_state()

    def set_epoch(self, epoch):
        self.epoch = epoch
        self._gen.set_state(self._gen_state)  # ruleid: MLS301

    def __len__(self):
        return self.length

    def _randint(self, hi):
        return int(torch.randint(0, hi, (1,), generator=self._gen))

    def _load_segment(self, path):
        wav, _ = sf.read(path, dtype="float32", always_2d=False)
        wav = torch.from_numpy(wav)
        if wav.numel() < self.seg:
            return torch.nn.functional.pad(wav, (0, self.seg - wav.numel()))
        start = self._randint(wav.numel() - self.seg + 1)
        return wav[start:start + self.seg]

    def __getitem__(self, idx):
        spk = torch.randperm(len(self.speakers), generator=self._gen)[: self.n_src].tolist()
        sources = []
        for s in spk:
            files = self.files[self.speakers[s]]
            src = self._load_segment(files[self._randint(len(files))])
            gain_db = torch.empty(1).uniform_(-5.0, 5.0, generator=self._gen)
            src = src / (src.std() + 1e-8) * 10 ** (gain_db / 20)
            sources.append(src)
        sources = torch.stack(sources)
        mixture = sources.sum(0)
        peak = mixture.abs().max().clamp_min(1e-8)
        scale = torch.clamp(0.9 / peak, max=1.0)
        return mixture * scale, sources * scale
