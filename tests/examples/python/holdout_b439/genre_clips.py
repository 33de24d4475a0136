# ruff: noqa
# Hold-out batch 439 (short files, 16 domains). Measured once in session 18 (round 119): 13/17 (76%) at medium+.
"""Log-mel clip dataset and loader for GTZAN-style music genre classification."""
import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset

GENRES = ["blues", "classical", "country", "disco", "hiphop",
          "jazz", "metal", "pop", "reggae", "rock"]


class GenreClips(Dataset):
    def __init__(self, items, sr=22050, clip_sec=3.0, n_mels=128, train=True):
        self.items = items                      # list of (wav_path, genre)
        self.sr = sr
        self.clip = int(sr * clip_sec)
        self.train = train
        self.melspec = torchaudio.transforms.MelSpectrogram(sr, n_fft=2048, hop_length=512, n_mels=n_mels)
        self.to_db = torchaudio.transforms.AmplitudeToDB(top_db=80)

    def __len__(self):
        return len(self.items)

    def _crop(self, wav, idx):
        if wav.size(-1) <= self.clip:
            return torch.nn.functional.pad(wav, (0, self.clip - wav.size(-1)))
        if not self.train:
            start = (wav.size(-1) - self.clip) // 2
        else:
            rng = np.random.default_rng(idx)  # ruleid: MLS301
            start = int(rng.integers(0, wav.size(-1) - self.clip))
        return wav[..., start:start + self.clip]

    def __getitem__(self, idx):
        path, genre = self.items[idx]
        wav, sr = torchaudio.load(path)
        if sr != self.sr:
            wav = torchaudio.functional.resample(wav, sr, self.sr)
        wav = self._crop(wav.mean(0, keepdim=True), idx)
        if self.train:
            wav = wav * (10 ** (np.random.uniform(-6, 6) / 20))
        spec = self.to_db(self.melspec(wav))
        return spec, GENRES.index(genre)


def _seed_worker(worker_id):
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)  # ok: MLS301


def make_loader(items, batch_size, train, num_workers=8, seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(GenreClips(items, train=train), batch_size=batch_size, shuffle=train,
                      num_workers=num_workers, worker_init_fn=_seed_worker, generator=g,
                      pin_memory=True, drop_last=train, persistent_workers=num_workers > 0)
