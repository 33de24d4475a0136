# ruff: noqa
# Hold-out batch 517 (textbook, neural machine translation). Measured once in session 23 (round 139): 21/32 (66%) at medium+.
"""Dictionary, BPE bitext loading, collation and length-bucketed batching."""
import logging
import math
import os
import pickle
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

logger = logging.getLogger(__name__)

CACHE_MAX_AGE = 14 * 24 * 3600


class Dictionary:
    """Maps BPE symbols to consecutive integers (fairseq dict.txt format)."""

    def __init__(self, pad="<pad>", eos="</s>", unk="<unk>", bos="<s>"):
        self.symbols, self.count, self.indices = [], [], {}
        self.bos_index = self.add_symbol(bos)
        self.pad_index = self.add_symbol(pad)
        self.eos_index = self.add_symbol(eos)
        self.unk_index = self.add_symbol(unk)
        self.nspecial = len(self.symbols)

    def __len__(self):
        return len(self.symbols)

    def __eq__(self, other):
        return isinstance(other, Dictionary) and self.symbols == other.symbols

    def pad(self):
        return self.pad_index

    def eos(self):
        return self.eos_index

    def index(self, sym):
        return self.indices.get(sym, self.unk_index)

    def add_symbol(self, word, n=1):
        if word not in self.indices:
            self.indices[word] = len(self.symbols)
            self.symbols.append(word)
            self.count.append(0)
        self.count[self.indices[word]] += n
        return self.indices[word]

    @classmethod
    def load(cls, path):
        d = cls()
        with open(path, encoding="utf-8") as f:
            for line in filter(None, (ln.rstrip() for ln in f)):
                word, cnt = line.rsplit(" ", 1)
                d.add_symbol(word, int(cnt))
        return d

    def encode_line(self, line, append_eos=True):
        ids = [self.index(w) for w in line.strip().split()]
        return torch.tensor(ids + [self.eos_index] if append_eos else ids, dtype=torch.long)

    def string(self, tensor, bpe_symbol=None):
        skip = {self.eos_index, self.pad_index, self.bos_index}
        toks = [self.symbols[i] for i in tensor.tolist() if i not in skip]
        sent = " ".join(toks)
        if bpe_symbol is not None:
            sent = (sent + " ").replace(bpe_symbol, "").rstrip()
        return sent


def load_indexed_text(path, dictionary, use_cache=True):
    """Tokenize a BPE'd text file once and cache the tensors next to it."""
    cache_path = path + ".idx.pkl"
    sizes_path = path + ".sizes.npy"
    if use_cache and os.path.exists(cache_path):
        if time.time() - os.path.getmtime(cache_path) > CACHE_MAX_AGE:
            logger.info("cache for %s is stale, rebuilding", path)
            os.remove(path)  # todoruleid: family 4 (missed)
        else:
            with open(cache_path, "rb") as f:
                tokens = pickle.load(f)  # ruleid: MLS103
            sizes = np.load(sizes_path, allow_pickle=True)  # ruleid: MLS104
            return tokens, sizes

    with open(path, encoding="utf-8") as f:
        tokens = [dictionary.encode_line(line) for line in f]
    sizes = np.array([len(t) for t in tokens], dtype=np.int64)
    if use_cache:
        with open(cache_path, "wb") as f:
            pickle.dump(tokens, f)
        np.save(sizes_path, sizes)
    return tokens, sizes


def collate_tokens(values, pad_idx, eos_idx, left_pad, move_eos_to_beginning=False):
    size = max(v.size(0) for v in values)
    res = values[0].new(len(values), size).fill_(pad_idx)

    def copy_tensor(src, dst):
        if move_eos_to_beginning:
            dst[0] = eos_idx
            dst[1:] = src[:-1]
        else:
            dst.copy_(src)

    for i, v in enumerate(values):
        copy_tensor(v, res[i][size - len(v):] if left_pad else res[i][: len(v)])
    return res


def collate(samples, pad_idx, eos_idx, left_pad_source=True, left_pad_target=False):
    def merge(key, left_pad, move_eos_to_beginning=False):
        return collate_tokens([s[key] for s in samples], pad_idx, eos_idx, left_pad, move_eos_to_beginning)

    ids = torch.LongTensor([s["id"] for s in samples])
    src_tokens = merge("source", left_pad_source)
    src_lengths = torch.LongTensor([s["source"].numel() for s in samples])
    src_lengths, sort_order = src_lengths.sort(descending=True)
    ids = ids.index_select(0, sort_order)
    src_tokens = src_tokens.index_select(0, sort_order)

    target = merge("target", left_pad_target).index_select(0, sort_order)
    prev_output_tokens = merge("target", left_pad_target, move_eos_to_beginning=left_pad_target)  # todoruleid: family 6 (missed)
    prev_output_tokens = prev_output_tokens.index_select(0, sort_order)
    ntokens = int(target.ne(pad_idx).sum().item())

    net_input = {"src_tokens": src_tokens, "src_lengths": src_lengths, "prev_output_tokens": prev_output_tokens}
    return {"id": ids, "nsentences": len(samples), "ntokens": ntokens, "net_input": net_input, "target": target}


class LanguagePairDataset(Dataset):
    def __init__(self, src, src_sizes, src_dict, tgt, tgt_sizes, tgt_dict, left_pad_source=True,
                 left_pad_target=False, max_source_positions=1024, max_target_positions=1024,
                 word_dropout=0.0, train=False, seed=1):
        assert len(src) == len(tgt), "source and target must have the same number of lines"
        self.src, self.tgt = src, tgt
        self.src_sizes, self.tgt_sizes = np.asarray(src_sizes), np.asarray(tgt_sizes)
        self.src_dict, self.tgt_dict = src_dict, tgt_dict
        self.left_pad_source, self.left_pad_target = left_pad_source, left_pad_target
        self.max_source_positions = max_source_positions
        self.max_target_positions = max_target_positions
        self.word_dropout, self.train, self.seed = word_dropout, train, seed

    def __len__(self):
        return len(self.src)

    def __getitem__(self, index):
        src_item = self.src[index]
        tgt_item = self.tgt[index]
        if self.train and self.word_dropout > 0:
            src_item = self._word_dropout(src_item)  # ok: MLS309
            tgt_item = self._word_dropout(tgt_item)  # todoruleid: family 6 (missed)
        return {"id": index, "source": src_item, "target": tgt_item}

    def _word_dropout(self, tokens):
        if len(tokens) <= 2:
            return tokens
        keep = np.random.rand(len(tokens)) >= self.word_dropout
        keep[-1] = True  # always keep eos
        if keep.sum() < 2:
            return tokens
        return tokens[torch.from_numpy(keep)]

    def num_tokens(self, index):
        return max(self.src_sizes[index], self.tgt_sizes[index])

    def ordered_indices(self, shuffle=True):
        if shuffle:
            indices = np.random.RandomState(self.seed).permutation(len(self))
        else:
            indices = np.arange(len(self))
        indices = indices[np.argsort(self.tgt_sizes[indices], kind="mergesort")]
        return indices[np.argsort(self.src_sizes[indices], kind="mergesort")]

    def filter_by_size(self, indices):
        ok = self.src_sizes[indices] <= self.max_source_positions
        ok &= self.tgt_sizes[indices] <= self.max_target_positions
        if not ok.all():
            logger.warning("%d samples exceed max positions and are skipped", (~ok).sum())
        return indices[ok]

    def collater(self, samples):
        return collate(samples, self.src_dict.pad(), self.src_dict.eos(),
                       self.left_pad_source, self.left_pad_target)


def batch_by_size(indices, num_tokens_fn, max_tokens, max_sentences=None, bsz_mult=8):
    """Group length-sorted indices into batches of at most ``max_tokens`` padded tokens."""
    batches, batch, sample_lens = [], [], []
    sample_len = 0
    for idx in indices:
        sample_lens.append(num_tokens_fn(idx))
        sample_len = max(sample_len, sample_lens[-1])
        num_tokens = (len(batch) + 1) * sample_len
        full = num_tokens > max_tokens or (max_sentences and len(batch) == max_sentences)
        if batch and full:
            mod_len = max(bsz_mult * (len(batch) // bsz_mult), len(batch) % bsz_mult)
            batches.append(batch[:mod_len])
            batch = batch[mod_len:]
            sample_lens = sample_lens[mod_len:]
            sample_len = max(sample_lens)
        batch.append(idx)
    if batch:
        batches.append(batch)
    return batches


class DistributedBucketSampler(Sampler):
    """Token-based batches built once from length buckets, shuffled per epoch, sharded per rank."""

    def __init__(self, dataset, max_tokens, max_sentences=None, num_replicas=1, rank=0,
                 shuffle=True, seed=1, bsz_mult=8):
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 1
        indices = dataset.filter_by_size(dataset.ordered_indices(shuffle=shuffle))
        self.batches = batch_by_size(indices, dataset.num_tokens, max_tokens, max_sentences, bsz_mult)
        if shuffle:
            # drop the long tail of oversized buckets; they dominate step time
            n_keep = int(math.ceil(len(self.batches) * 0.95))
            self.batches = self.batches[:n_keep]  # todoruleid: family 6 (missed)
        logger.info("built %d batches (max_tokens=%d)", len(self.batches), max_tokens)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        batches = list(self.batches)
        if self.shuffle:
            rng = np.random.RandomState(self.seed + self.epoch)  # ok: MLS301
            rng.shuffle(batches)
        total = len(self) * self.num_replicas
        batches += batches[: total - len(batches)]
        return iter(batches[self.rank::self.num_replicas])

    def __len__(self):
        return int(math.ceil(len(self.batches) / self.num_replicas))


def make_worker_init_fn(seed):
    def _init(worker_id):
        np.random.seed(seed)  # ruleid: MLS301

    return _init


def load_langpair_dataset(data_dir, split, src, tgt, src_dict, tgt_dict, args, train=False):
    prefix = os.path.join(data_dir, "{}.{}-{}".format(split, src, tgt))
    src_tokens, src_sizes = load_indexed_text(prefix + "." + src, src_dict)
    tgt_tokens, tgt_sizes = load_indexed_text(prefix + "." + tgt, tgt_dict)
    logger.info("%s %s-%s: %d examples", split, src, tgt, len(src_tokens))
    return LanguagePairDataset(
        src_tokens, src_sizes, src_dict, tgt_tokens, tgt_sizes, tgt_dict,
        max_source_positions=args.max_source_positions, max_target_positions=args.max_target_positions,
        word_dropout=args.word_dropout if train else 0.0, train=train, seed=args.seed,
    )


def build_dataloader(dataset, args, shuffle, num_replicas=1, rank=0, max_tokens=None):
    sampler = DistributedBucketSampler(
        dataset, max_tokens=max_tokens or args.max_tokens, max_sentences=args.batch_size,
        num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=args.seed,
    )
    loader = DataLoader(
        dataset, batch_sampler=sampler, collate_fn=dataset.collater, num_workers=args.num_workers,
        pin_memory=torch.cuda.is_available(), worker_init_fn=make_worker_init_fn(args.seed),
    )
    return loader, sampler
