# ruff: noqa
# Hold-out batch 560 (families 6/7, speech translation and text-to-speech with a CUDA extension build). Measured once in session 25 (round 149): 8/30 (27%) at medium+.
"""Datasets, samplers and collate functions for TTS, S2UT and vocoder training."""
import json
import logging
import math
import random
from collections import Counter
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler, WeightedRandomSampler

log = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = 0, 1, 2, 3
NUM_SPECIAL = 4


def read_jsonl(path: str) -> List[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(l) for l in fh if l.strip()]


class SymbolTable:
    def __init__(self, symbols: Sequence[str]):
        self.symbols = ["<pad>", "<unk>", "<s>", "</s>"] + sorted(set(symbols))
        self.index = {s: i for i, s in enumerate(self.symbols)}

    @classmethod
    def from_manifest(cls, rows: List[dict]) -> "SymbolTable":
        return cls([p for r in rows for p in r.get("phones", "").split()])

    def encode(self, phones: str) -> torch.LongTensor:
        return torch.tensor([self.index.get(p, UNK) for p in phones.split()] + [EOS], dtype=torch.long)

    def __len__(self):
        return len(self.symbols)


class SpecAugment(torch.nn.Module):
    """Frequency / time masking (Park et al. 2019) on (n_mels, T) features."""

    def __init__(self, freq_mask: int = 15, time_mask: int = 40, n_freq: int = 2, n_time: int = 2):
        super().__init__()
        self.freq_mask, self.time_mask, self.n_freq, self.n_time = freq_mask, time_mask, n_freq, n_time

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        feat = feat.clone()
        fill = feat.mean()
        n_f, n_t = feat.shape
        for _ in range(self.n_freq):
            w = random.randint(0, self.freq_mask)
            f0 = random.randint(0, max(n_f - w, 0))
            feat[f0:f0 + w, :] = fill
        for _ in range(self.n_time):
            w = random.randint(0, min(self.time_mask, n_t // 5))
            t0 = random.randint(0, max(n_t - w, 0))
            feat[:, t0:t0 + w] = fill
        return feat


class TTSDataset(Dataset):
    """Phone sequence + speaker -> mel / pitch / energy / durations (FastSpeech2 style)."""

    def __init__(self, manifest: str, symbols: SymbolTable, speaker_map: Dict[str, int], mel_stats: str,
                 max_frames: int = 1000, training: bool = True, spec_augment: bool = False):
        self.rows = [r for r in read_jsonl(manifest) if 0 < r.get("n_frames", 0) <= max_frames]
        self.symbols, self.speaker_map, self.training = symbols, speaker_map, training
        stats = np.load(mel_stats)
        self.mel_mean = torch.from_numpy(stats[0]).float()[:, None]
        self.mel_std = torch.from_numpy(stats[1]).float()[:, None]
        self.speaker_ids = sorted(set(speaker_map.values()))
        self.spec_aug = SpecAugment(freq_mask=8, time_mask=20) if spec_augment else None
        log.info("TTSDataset %s: %d utterances", manifest, len(self.rows))

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        feats = np.load(row["features"])
        mel = (torch.from_numpy(feats["mel"]).float() - self.mel_mean) / self.mel_std
        if self.training and self.spec_aug is not None:
            mel = self.spec_aug(mel)  # todoruleid: family 6 (missed)
        spk = self.speaker_map.get(row["speaker"], 0)
        if self.training and index % 11 == 0:
            # speaker-embedding dropout keeps the encoder from memorising speaker identity
            spk = self.speaker_ids[(index * 7) % len(self.speaker_ids)]  # todoruleid: family 6 (missed)
        f0 = torch.from_numpy(feats["f0"]).float()
        f0 = torch.where(f0 > 0, torch.log(f0.clamp(min=1.0)), torch.zeros_like(f0))
        return {
            "id": row["id"],
            "phones": self.symbols.encode(row["phones"]),
            "durations": torch.from_numpy(np.append(feats["durations"], 0)).long(),
            "mel": mel, "pitch": f0, "energy": torch.from_numpy(feats["energy"]).float(),
            "speaker": spk,
        }


def speaker_balanced_sampler(rows: List[dict], speaker_map: Dict[str, int], num_samples: Optional[int] = None):
    counts = Counter(r["speaker"] for r in rows)
    weights = torch.tensor([1.0 / counts[r["speaker"]] for r in rows], dtype=torch.double)  # ok: MLS309
    return WeightedRandomSampler(weights, num_samples=num_samples or len(rows), replacement=True)


def collate_tts(batch: List[dict]) -> dict:
    batch = sorted(batch, key=lambda b: b["mel"].size(1), reverse=True)
    phones = [b["phones"] for b in batch]
    durations = [b["durations"] for b in batch]
    # packed encoder input requires descending token lengths
    phones.sort(key=len, reverse=True)  # todoruleid: family 6 (missed)
    mel_lens = torch.tensor([b["mel"].size(1) for b in batch])
    t_max, n_mels = int(mel_lens.max()), batch[0]["mel"].size(0)
    mels = torch.zeros(len(batch), n_mels, t_max)
    pitch = torch.zeros(len(batch), t_max)
    energy = torch.zeros(len(batch), t_max)
    for i, b in enumerate(batch):
        L = b["mel"].size(1)
        mels[i, :, :L] = b["mel"]
        pitch[i, :L] = b["pitch"][:L]
        energy[i, :L] = b["energy"][:L]
    return {
        "ids": [b["id"] for b in batch],
        "phones": torch.nn.utils.rnn.pad_sequence(phones, batch_first=True, padding_value=PAD),
        "phone_lens": torch.tensor([len(p) for p in phones]),
        "durations": torch.nn.utils.rnn.pad_sequence(durations, batch_first=True),
        "mels": mels, "mel_lens": mel_lens, "pitch": pitch, "energy": energy,
        "speakers": torch.tensor([b["speaker"] for b in batch]),
    }


# --------------------------------------------------------------------------- speech-to-unit translation

def reduce_units(units: torch.Tensor) -> torch.Tensor:
    """Collapse runs of identical HuBERT units ("reduced" units as in Lee et al. 2022)."""
    return torch.unique_consecutive(units)


class S2UTDataset(Dataset):
    """Source fbank -> target discrete units, multilingual (one target-language token per item)."""

    def __init__(self, manifests: Dict[str, str], unit_files: Dict[str, str], lang2id: Dict[str, int],
                 n_units: int = 1000, training: bool = True, tone_prob: float = 0.0):
        self.rows, self.units = [], []
        for pair, path in manifests.items():
            rows = read_jsonl(path)
            with open(unit_files[pair], encoding="utf-8") as fh:
                unit_map = dict(l.rstrip("\n").split("|", 1) for l in fh if "|" in l)
            for r in rows:
                if r["id"] in unit_map:
                    self.rows.append(r)
                    self.units.append(torch.tensor([int(u) for u in unit_map[r["id"]].split()], dtype=torch.long))
        self.lang2id, self.n_units, self.training = lang2id, n_units, training
        self.vocab_size = n_units + NUM_SPECIAL
        self.spec_aug = SpecAugment()
        self.tone_prob = tone_prob
        self.tone_anchor = 0

    def __len__(self):
        return len(self.rows)

    @property
    def languages(self) -> List[str]:
        return [r["src_lang"] for r in self.rows]

    @staticmethod
    def _add_tone(feat: torch.Tensor) -> torch.Tensor:
        # narrow-band tone in the 3.4-4 kHz region, as produced by telephony signalling
        t = torch.arange(min(40, feat.size(1)), dtype=feat.dtype)
        feat[-12:-8, : t.numel()] += 2.0 + torch.sin(0.5 * math.pi * t)
        return feat

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        src = torch.from_numpy(np.load(row["features"])["src_fbank"]).float().t()
        src = (src - src.mean(1, keepdim=True)) / (src.std(1, keepdim=True) + 1e-5)
        units = reduce_units(self.units[index])
        if self.training:
            src = self.spec_aug(src)  # ok: MLS309
            if self.tone_prob > 0 and random.random() < self.tone_prob:
                src = self._add_tone(src)
                units = reduce_units(self.units[self.tone_anchor])  # todoruleid: family 6 (missed)
        tgt = torch.remainder(units + NUM_SPECIAL, self.n_units)  # todoruleid: family 6 (missed)
        tgt_lang = self.lang2id[row["src_lang"]]  # todoruleid: family 6 (missed)
        return {"id": row["id"], "src": src.t(), "tgt": torch.cat([tgt, torch.tensor([EOS])]), "lang": tgt_lang}


def collate_s2ut(batch: List[dict]) -> dict:
    src = [b["src"] for b in batch]
    tgt = [b["tgt"] for b in batch]
    lang = torch.tensor([b["lang"] for b in batch])
    tgt_pad = torch.nn.utils.rnn.pad_sequence(tgt, batch_first=True, padding_value=PAD)
    prev = torch.cat([lang[:, None] + 0 * tgt_pad[:, :1], tgt_pad[:, :-1]], dim=1)
    return {
        "ids": [b["id"] for b in batch],
        "src": torch.nn.utils.rnn.pad_sequence(src, batch_first=True),
        "src_lens": torch.tensor([s.size(0) for s in src]),
        "prev_output": prev, "target": tgt_pad, "lang": lang,
    }


class LanguageTemperatureSampler(Sampler[int]):
    """Multilingual sampling with p_l proportional to n_l^(1/T) (Arivazhagan et al. 2019)."""

    def __init__(self, languages: List[str], temperature: float = 5.0, num_samples: Optional[int] = None,
                 rank: int = 0, world_size: int = 1, seed: int = 0):
        self.by_lang: Dict[str, List[int]] = {}
        for i, l in enumerate(languages):
            self.by_lang.setdefault(l, []).append(i)
        self.langs = sorted(self.by_lang)
        sizes = np.array([len(self.by_lang[l]) for l in self.langs], dtype=np.float64)
        weights = sizes ** temperature  # todoruleid: family 6 (missed)
        self.probs = weights / weights.sum()
        self.num_samples = (num_samples or len(languages)) // world_size
        self.rank, self.world_size, self.seed, self.epoch = rank, world_size, seed, 0
        log.info("language sampling probs: %s", dict(zip(self.langs, np.round(self.probs, 4))))

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng(self.seed + self.epoch * 1000 + self.rank)
        lang_draws = rng.choice(len(self.langs), size=self.num_samples, p=self.probs)
        for li in lang_draws:
            pool = self.by_lang[self.langs[li]]
            yield pool[rng.integers(len(pool))]

    def __len__(self):
        return self.num_samples


# --------------------------------------------------------------------------- vocoder

class VocoderDataset(Dataset):
    """Random aligned (mel, waveform) segments for HiFi-GAN training."""

    def __init__(self, manifest: str, seg_frames: int = 32, hop: int = 256, training: bool = True):
        self.rows = [r for r in read_jsonl(manifest) if r.get("n_frames", 0) > seg_frames]
        self.seg_frames, self.hop, self.training = seg_frames, hop, training

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index: int):
        import torchaudio
        row = self.rows[index]
        mel = torch.from_numpy(np.load(row["features"])["mel"]).float()
        wav, _ = torchaudio.load(row["tgt_audio"])
        wav = wav.mean(0)
        wav = F.pad(wav, (0, max(0, mel.size(1) * self.hop - wav.numel())))
        if not self.training:
            return mel, wav[: mel.size(1) * self.hop]
        mel_start = random.randint(0, mel.size(1) - self.seg_frames)
        # with center=True the first STFT frame is centred on sample 0
        audio_start = (mel_start + 1) * self.hop  # todoruleid: family 6 (missed)
        seg = wav[audio_start: audio_start + self.seg_frames * self.hop]
        seg = F.pad(seg, (0, self.seg_frames * self.hop - seg.numel()))
        return mel[:, mel_start: mel_start + self.seg_frames], seg
