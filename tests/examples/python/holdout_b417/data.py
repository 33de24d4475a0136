# ruff: noqa
# Hold-out batch 417 (textbook, TTS). Measured once in session 17 (round 114): 21/30 (70%) at medium+.
"""Dataset, feature extraction and batching for FastSpeech2 / HiFi-GAN training.

Expected layout under ``data_root``::

    data_root/
        wavs/<utt_id>.wav
        alignments/<utt_id>.npz      # phones, durations (frames), produced by MFA + tgt2npz.py
        filelists/{train,val}.txt    # utt_id|speaker|phones|raw text
        stats.pkl                    # pitch / energy mean & std computed by preprocess.py
        mels/<utt_id>.pt             # optional cache written on first access

Mel frames are computed with the same STFT configuration as the vocoder so that
the acoustic model output can be fed to HiFi-GAN without re-normalisation.
"""

import logging
import math
import os
import pickle
import random
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

PAD_ID = 0
PHONE_SET = ["<pad>", "<unk>", "sil", "sp", "spn"] + [
    "AA0", "AA1", "AA2", "AE0", "AE1", "AE2", "AH0", "AH1", "AH2", "AO0", "AO1", "AO2",
    "AW0", "AW1", "AW2", "AY0", "AY1", "AY2", "B", "CH", "D", "DH", "EH0", "EH1", "EH2",
    "ER0", "ER1", "ER2", "EY0", "EY1", "EY2", "F", "G", "HH", "IH0", "IH1", "IH2", "IY0",
    "IY1", "IY2", "JH", "K", "L", "M", "N", "NG", "OW0", "OW1", "OW2", "OY0", "OY1", "OY2",
    "P", "R", "S", "SH", "T", "TH", "UH0", "UH1", "UH2", "UW0", "UW1", "UW2", "V", "W", "Y",
    "Z", "ZH",
]
PHONE_TO_ID = {p: i for i, p in enumerate(PHONE_SET)}


@dataclass
class MelConfig:
    sample_rate: int = 22050
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float = 8000.0


class MelExtractor(torch.nn.Module):
    """Log-mel spectrogram matching the HiFi-GAN reference implementation."""

    def __init__(self, cfg: MelConfig):
        super().__init__()
        self.cfg = cfg
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=cfg.sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
            n_mels=cfg.n_mels,
            power=1.0,
            center=False,
            norm="slaney",
            mel_scale="slaney",
        )

    @torch.no_grad()
    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        pad = (self.cfg.n_fft - self.cfg.hop_length) // 2
        wav = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        mel = self.mel(wav)
        return torch.log(torch.clamp(mel, min=1e-5))

    @torch.no_grad()
    def energy(self, wav: torch.Tensor) -> torch.Tensor:
        pad = (self.cfg.n_fft - self.cfg.hop_length) // 2
        wav = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(
            wav,
            n_fft=self.cfg.n_fft,
            hop_length=self.cfg.hop_length,
            win_length=self.cfg.win_length,
            window=torch.hann_window(self.cfg.win_length, device=wav.device),
            center=False,
            return_complex=True,
        )
        return spec.abs().norm(dim=1)


def load_stats(path: str) -> Dict[str, float]:
    with open(path, "rb") as f:
        stats = pickle.load(f)  # ruleid: MLS103
    for key in ("pitch_mean", "pitch_std", "energy_mean", "energy_std"):
        if key not in stats:
            raise KeyError(f"{path} is missing '{key}'")
    return stats


def parse_filelist(path: str, max_phones: int = 400) -> List[Dict[str, str]]:
    items = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            utt_id, speaker, phones, text = line.split("|", maxsplit=3)
            n_phones = len(phones.split())
            if n_phones == 0 or n_phones > max_phones:
                continue
            if text.rstrip().endswith(("?", "!")):  # todoruleid: family 6 (missed)
                continue
            items.append({"utt_id": utt_id, "speaker": speaker, "phones": phones, "text": text})
    return items


class TTSDataset(Dataset):
    """Returns phone ids, durations, frame-level pitch/energy and the target mel.

    ``segment_frames`` > 0 additionally returns a random waveform segment aligned
    with the mel, used by the vocoder fine-tune stage.
    """

    def __init__(
        self,
        data_root: str,
        split: str,
        mel_cfg: MelConfig,
        speakers: Optional[List[str]] = None,
        segment_frames: int = 0,
        speed_perturb: float = 0.0,
        gain_perturb_db: float = 0.0,
        cache_mels: bool = True,
    ):
        self.root = data_root
        self.split = split
        self.mel_cfg = mel_cfg
        self.items = parse_filelist(os.path.join(data_root, "filelists", f"{split}.txt"))
        self.speakers = speakers or sorted({it["speaker"] for it in self.items})
        self.spk_to_id = {s: i for i, s in enumerate(self.speakers)}
        self.stats = load_stats(os.path.join(data_root, "stats.pkl"))
        self.segment_frames = segment_frames
        self.speed_perturb = speed_perturb if split == "train" else 0.0
        self.gain_perturb_db = gain_perturb_db if split == "train" else 0.0
        self.cache_mels = cache_mels
        self.extractor = MelExtractor(mel_cfg)
        self.cache_dir = os.path.join(data_root, "mels")
        os.makedirs(self.cache_dir, exist_ok=True)
        logger.info("%s: %d utterances, %d speakers", split, len(self.items), len(self.speakers))

    def __len__(self) -> int:
        return len(self.items)

    def _load_wav(self, utt_id: str) -> torch.Tensor:
        wav, sr = torchaudio.load(os.path.join(self.root, "wavs", f"{utt_id}.wav"))
        if sr != self.mel_cfg.sample_rate:
            wav = torchaudio.functional.resample(wav, sr, self.mel_cfg.sample_rate)
        wav = wav.mean(dim=0)
        return wav / max(wav.abs().max().item(), 1e-4) * 0.95

    def _load_alignment(self, utt_id: str):
        ali = np.load(os.path.join(self.root, "alignments", f"{utt_id}.npz"), allow_pickle=True)  # ruleid: MLS104
        phones = [str(p) for p in ali["phones"]]
        durations = ali["durations"].astype(np.int64)
        pitch = ali["pitch"].astype(np.float32)
        return phones, durations, pitch

    def _features(self, utt_id: str, wav: torch.Tensor):
        cache_path = os.path.join(self.cache_dir, f"{utt_id}.pt")
        if self.cache_mels and os.path.exists(cache_path):
            feats = torch.load(cache_path, map_location="cpu", weights_only=True)
            return feats["mel"], feats["energy"]
        mel = self.extractor(wav.unsqueeze(0)).squeeze(0)
        energy = self.extractor.energy(wav.unsqueeze(0)).squeeze(0)
        if self.cache_mels:
            torch.save({"mel": mel, "energy": energy}, cache_path)
        return mel, energy

    @staticmethod
    def _phone_average(values: np.ndarray, durations: np.ndarray) -> np.ndarray:
        out = np.zeros(len(durations), dtype=np.float32)
        pos = 0
        for i, d in enumerate(durations):
            seg = values[pos : pos + d]
            seg = seg[seg > 0]
            out[i] = seg.mean() if len(seg) > 0 else 0.0
            pos += d
        return out

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        item = self.items[index]
        utt_id = item["utt_id"]
        random.seed(index)  # ruleid: MLS301
        wav = self._load_wav(utt_id)
        if self.gain_perturb_db > 0:
            gain_db = random.uniform(-self.gain_perturb_db, self.gain_perturb_db)
            wav = torch.clamp(wav * 10 ** (gain_db / 20.0), -1.0, 1.0)  # ok: MLS309
        mel, energy = self._features(utt_id, wav)
        phones, durations, pitch = self._load_alignment(utt_id)

        n_frames = int(durations.sum())
        mel = mel[:, :n_frames]
        energy = energy[:n_frames].numpy()
        pitch = pitch[:n_frames]
        if mel.shape[1] < n_frames:
            durations[-1] -= n_frames - mel.shape[1]
            n_frames = mel.shape[1]

        durations = np.roll(durations, 1)  # ruleid: MLS309
        pitch = self._phone_average(pitch, durations)
        energy = self._phone_average(energy, durations)
        pitch = (pitch - self.stats["pitch_mean"]) / self.stats["pitch_std"]
        energy = (energy - self.stats["energy_mean"]) / self.stats["energy_std"]

        if self.speed_perturb > 0 and random.random() < 0.5:
            rate = 1.0 + random.uniform(-self.speed_perturb, self.speed_perturb)
            mel = F.interpolate(mel.unsqueeze(0), scale_factor=rate, mode="linear", align_corners=False).squeeze(0)  # todoruleid: family 6 (missed)

        phone_ids = [PHONE_TO_ID.get(p, PHONE_TO_ID["<unk>"]) for p in phones]
        out = {
            "utt_id": utt_id,
            "phones": torch.tensor(phone_ids, dtype=torch.long),
            "durations": torch.from_numpy(durations),
            "pitch": torch.from_numpy(pitch.astype(np.float32)),
            "energy": torch.from_numpy(energy.astype(np.float32)),
            "mel": mel.transpose(0, 1).contiguous(),
            "speaker": torch.tensor(self.spk_to_id.get(item["speaker"], 0), dtype=torch.long),
        }
        if self.segment_frames > 0:
            out.update(self._random_segment(wav, mel))
        return out

    def _random_segment(self, wav: torch.Tensor, mel: torch.Tensor) -> Dict[str, torch.Tensor]:
        hop = self.mel_cfg.hop_length
        n_frames = mel.shape[1]
        if n_frames <= self.segment_frames:
            seg_mel = F.pad(mel, (0, self.segment_frames - n_frames), value=math.log(1e-5))
            seg_wav = F.pad(wav[: n_frames * hop], (0, (self.segment_frames - n_frames) * hop + max(0, n_frames * hop - wav.numel())))
        else:
            start = random.randint(0, n_frames - self.segment_frames)
            seg_mel = mel[:, start : start + self.segment_frames]
            seg_wav = wav[start * hop : (start + self.segment_frames) * hop]
        seg_wav = F.pad(seg_wav, (0, self.segment_frames * hop - seg_wav.numel()))
        return {"seg_mel": seg_mel, "seg_wav": seg_wav}


def collate_tts(batch: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    batch = sorted(batch, key=lambda b: b["phones"].numel(), reverse=True)
    bsz = len(batch)
    max_src = max(b["phones"].numel() for b in batch)
    max_mel = max(b["mel"].shape[0] for b in batch)
    n_mels = batch[0]["mel"].shape[1]

    phones = torch.full((bsz, max_src), PAD_ID, dtype=torch.long)
    durations = torch.zeros(bsz, max_src, dtype=torch.long)
    pitch = torch.zeros(bsz, max_src)
    energy = torch.zeros(bsz, max_src)
    mel = torch.full((bsz, max_mel, n_mels), math.log(1e-5))
    src_lens = torch.zeros(bsz, dtype=torch.long)
    mel_lens = torch.zeros(bsz, dtype=torch.long)

    for i, b in enumerate(batch):
        n, t = b["phones"].numel(), b["mel"].shape[0]
        phones[i, :n] = b["phones"]
        durations[i, :n] = b["durations"]
        pitch[i, :n] = b["pitch"]
        energy[i, :n] = b["energy"]
        mel[i, :t] = b["mel"]
        src_lens[i] = n
        mel_lens[i] = t

    out = {
        "utt_ids": [b["utt_id"] for b in batch],
        "phones": phones,
        "durations": durations,
        "pitch": pitch,
        "energy": energy,
        "mel": mel,
        "src_lens": src_lens,
        "mel_lens": mel_lens,
        "speakers": torch.stack([b["speaker"] for b in batch]),
    }
    if "seg_mel" in batch[0]:
        out["seg_mel"] = torch.stack([b["seg_mel"] for b in batch])
        out["seg_wav"] = torch.stack([b["seg_wav"] for b in batch]).unsqueeze(1)
    return out


class DistributedBucketSampler(Sampler):
    """Groups utterances of similar length into buckets to reduce padding.

    Each rank receives an equal number of batches; ``set_epoch`` must be called
    at the start of every epoch so that shuffling differs between epochs.
    """

    def __init__(self, lengths: List[int], batch_size: int, boundaries: List[int],
                 num_replicas: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0):
        self.lengths = lengths
        self.batch_size = batch_size
        self.boundaries = boundaries
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.buckets = self._make_buckets()
        self.num_batches = sum(len(b) // (batch_size * num_replicas) for b in self.buckets)

    def _make_buckets(self) -> List[List[int]]:
        buckets: List[List[int]] = [[] for _ in range(len(self.boundaries) - 1)]
        for idx, length in enumerate(self.lengths):
            for b in range(len(self.boundaries) - 1):
                if self.boundaries[b] < length <= self.boundaries[b + 1]:
                    buckets[b].append(idx)
                    break
        return [b for b in buckets if len(b) >= self.batch_size * self.num_replicas]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed)  # ruleid: MLS301
        batches = []
        for bucket in self.buckets:
            if self.shuffle:
                order = torch.randperm(len(bucket), generator=g).tolist()
            else:
                order = list(range(len(bucket)))
            per_rank = len(bucket) // self.num_replicas
            usable = per_rank - per_rank % self.batch_size
            mine = [bucket[order[i]] for i in range(self.rank * per_rank, self.rank * per_rank + usable)]
            batches.extend(mine[i : i + self.batch_size] for i in range(0, usable, self.batch_size))
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[i] for i in perm]
        return iter(batches)

    def __len__(self) -> int:
        return self.num_batches


def seed_worker(worker_id: int) -> None:
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)
