# ruff: noqa
# Hold-out batch 447 (short files, 16 domains). Measured once in session 19 (round 121): 13/17 (76%) at medium+.
"""BC5CDR / CHEMDNER token classification data pipeline for chemical NER."""
import torch
from torch.utils.data import DataLoader, Dataset

LABELS = ["O", "B-Chemical", "I-Chemical"]
LABEL2ID = {l: i for i, l in enumerate(LABELS)}


class ChemNERDataset(Dataset):
    def __init__(self, sentences, tokenizer, max_length=256):
        self.sentences = sentences  # list of (words, tags)
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __len__(self):
        return len(self.sentences)

    def _normalise_tags(self, words, tags):
        out = []
        for word, tag in zip(words, tags):
            # short all-caps tokens are usually gene / abbreviation noise in CHEMDNER
            if tag != "O" and len(word) <= 4 and word.isupper():
                tag = "O"  # todoruleid: family 6 (missed)
            out.append(tag)
        return out

    def __getitem__(self, idx):
        words, tags = self.sentences[idx]
        tags = self._normalise_tags(words, tags)
        enc = self.tokenizer(words, is_split_into_words=True, truncation=True,
                             max_length=self.max_length)
        labels, prev = [], None
        for word_idx in enc.word_ids():
            if word_idx is None or word_idx == prev:
                labels.append(-100)
            else:
                labels.append(LABEL2ID[tags[word_idx]])
            prev = word_idx
        enc["labels"] = labels
        return enc


def _worker_init_fn(worker_id):
    import numpy as np
    np.random.seed(torch.initial_seed() % 2 ** 32)  # ok: MLS301


def build_loader(dataset, collator, batch_size, shuffle, num_workers=4):
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle,
                      num_workers=num_workers, collate_fn=collator,
                      worker_init_fn=_worker_init_fn, pin_memory=True)
