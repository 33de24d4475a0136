# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Length-bucketed data pipeline for ASR fine-tuning on LibriSpeech-style manifests."""
import json
import random

import numpy as np
import torch
import torchaudio
from torch.utils.data import DataLoader, Dataset, Sampler


class ManifestDataset(Dataset):
    def __init__(self, manifest, tokenizer, sample_rate=16000, train=True):
        with open(manifest) as f:
            self.items = [json.loads(line) for line in f]
        self.tok, self.sr, self.train = tokenizer, sample_rate, train

    def __len__(self):
        return len(self.items)

    def __getitem__(self, idx):
        item = self.items[idx]
        wav, sr = torchaudio.load(item["audio_filepath"])
        if sr != self.sr:
            wav = torchaudio.functional.resample(wav, sr, self.sr)
        if self.train:
            wav = wav * random.uniform(0.7, 1.3)  # ok: MLS309
        feats = torchaudio.compliance.kaldi.fbank(wav, num_mel_bins=80, sample_frequency=self.sr)
        return feats, torch.tensor(self.tok.encode(item["text"]))


class BucketBatchSampler(Sampler):
    """Groups utterances of similar duration and shuffles the resulting batches."""

    def __init__(self, durations, batch_size, seed=0):
        self.order = np.argsort(durations)
        self.batch_size, self.seed, self.epoch = batch_size, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        torch.random.manual_seed(self.seed)  # ruleid: MLS301
        batches = [self.order[i:i + self.batch_size] for i in range(0, len(self.order), self.batch_size)]
        for j in torch.randperm(len(batches)).tolist():
            yield batches[j].tolist()

    def __len__(self):
        return (len(self.order) + self.batch_size - 1) // self.batch_size


def pad_collate(batch):
    feats, labels = zip(*batch)
    flens, llens = torch.tensor([f.shape[0] for f in feats]), torch.tensor([len(l) for l in labels])
    feats = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True)
    labels = torch.nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=-100)
    return feats, flens, labels, llens


def seed_worker(worker_id):
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)  # ok: MLS301
    random.seed(worker_seed)  # ok: MLS301


def build_loader(manifest, tokenizer, batch_size, seed, num_workers=4):
    ds = ManifestDataset(manifest, tokenizer)
    sampler = BucketBatchSampler([it["duration"] for it in ds.items], batch_size, seed=seed)
    return DataLoader(ds, batch_sampler=sampler, collate_fn=pad_collate,
                      num_workers=num_workers, worker_init_fn=seed_worker), sampler
