# ruff: noqa
# Hold-out batch 243 (short files). Measured once in session 8 (round 70): 15/18 (83%) at medium+.
"""CoNLL-2003 style token-classification dataset and loader factory for a BiLSTM-CRF tagger."""
import os
import random
import time

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

PAD_LABEL = -100


def read_conll(path):
    sents, tags, words, labels = [], [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("-DOCSTART-"):
                if words:
                    sents.append(words)
                    tags.append(labels)
                    words, labels = [], []
                continue
            parts = line.split()
            words.append(parts[0])
            labels.append(parts[-1])
    if words:
        sents.append(words)
        tags.append(labels)
    return sents, tags


class ConllDataset(Dataset):
    def __init__(self, path, vocab, tag2id, word_dropout=0.05):
        self.sents, self.tags = read_conll(path)
        self.vocab, self.tag2id = vocab, tag2id
        self.word_dropout = word_dropout

    def __len__(self):
        return len(self.sents)

    def __getitem__(self, idx):
        unk = self.vocab["<unk>"]
        ids = [self.vocab.get(w.lower(), unk) for w in self.sents[idx]]
        ids = [unk if random.random() < self.word_dropout else i for i in ids]  # ok: MLS309
        labels = [self.tag2id[t] for t in self.tags[idx]]
        return torch.tensor(ids), torch.tensor(labels)


def pad_collate(batch):
    ids, labels = zip(*batch)
    ids = pad_sequence(ids, batch_first=True, padding_value=0)
    labels = pad_sequence(labels, batch_first=True, padding_value=PAD_LABEL)
    return ids, labels, ids.ne(0)


def _init_worker(worker_id):
    info = torch.utils.data.get_worker_info()
    seed = (time.time_ns() ^ (os.getpid() << 8) ^ info.id) % 2**32
    np.random.seed(seed)  # ruleid: MLS301
    random.seed(seed)  # ruleid: MLS301


def make_loader(dataset, batch_size, seed, shuffle=True, workers=4):
    g = torch.Generator()
    g.manual_seed(seed)  # ok: MLS301
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
                      collate_fn=pad_collate, worker_init_fn=_init_worker, generator=g,
                      persistent_workers=workers > 0)
