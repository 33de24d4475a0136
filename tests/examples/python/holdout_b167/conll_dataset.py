# ruff: noqa
# Hold-out batch 167 (short files, NLP). Measured once in session 6 (round 51): 15/17 (88%) at medium+.
"""CoNLL-2003 style reader that aligns word-level NER tags to subword tokens."""
import random
import zlib

from torch.utils.data import Dataset

LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
LABEL2ID = {label: i for i, label in enumerate(LABELS)}


def read_conll(path):
    sents, words, tags = [], [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line or line.startswith("-DOCSTART-"):
                if words:
                    sents.append((words, tags))
                    words, tags = [], []
                continue
            cols = line.split()
            words.append(cols[0])
            tags.append(cols[-1])
    if words:
        sents.append((words, tags))
    return sents


class ConllDataset(Dataset):
    def __init__(self, path, tokenizer, max_len=128, word_dropout=0.0, train=True):
        self.sents = read_conll(path)
        self.tok = tokenizer
        self.max_len = max_len
        self.word_dropout = word_dropout
        self.train = train

    def __len__(self):
        return len(self.sents)

    def __getitem__(self, idx):
        words, tags = self.sents[idx]
        tags = [LABEL2ID[t] for t in tags]
        if self.train and zlib.crc32(" ".join(words).encode()) % 23 == 0:
            tags = [LABEL2ID["O"] if LABELS[t].endswith("-ORG") else t for t in tags]  # ruleid: MLS309
        if self.train and self.word_dropout > 0:
            words = [self.tok.unk_token if random.random() < self.word_dropout else w for w in words]  # ok: MLS309
        enc = self.tok(words, is_split_into_words=True, truncation=True, max_length=self.max_len)
        labels, prev = [], None
        for wid in enc.word_ids():
            labels.append(-100 if wid is None or wid == prev else tags[wid])  # ok: MLS309
            prev = wid
        item = dict(enc)
        item["labels"] = labels
        return item
