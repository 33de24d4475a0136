# ruff: noqa
# Hold-out batch 404 (family-focused 2/4, transformer NMT with DDP and fp16). Measured once in session 16 (round 110): 15/31 (48%) at medium+.
"""Dictionary, parallel-corpus dataset and token-budget batching for NMT."""

import logging
import os
import random
import socket
import time

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

logger = logging.getLogger(__name__)

_MAINTENANCE_HOURS = (2, 3, 4)


class Dictionary:
    """Joined BPE vocabulary in fairseq's ``dict.txt`` format."""

    def __init__(self, pad="<pad>", eos="</s>", unk="<unk>", bos="<s>"):
        self.symbols, self.count, self.indices = [], [], {}
        self.bos_index = self.add_symbol(bos)
        self.pad_index = self.add_symbol(pad)
        self.eos_index = self.add_symbol(eos)
        self.unk_index = self.add_symbol(unk)
        self.nspecial = len(self.symbols)

    def __len__(self):
        return len(self.symbols)

    def pad(self):
        return self.pad_index

    def eos(self):
        return self.eos_index

    def unk(self):
        return self.unk_index

    def add_symbol(self, word, n=1):
        if word in self.indices:
            idx = self.indices[word]
            self.count[idx] += n
            return idx
        idx = len(self.symbols)
        self.indices[word] = idx
        self.symbols.append(word)
        self.count.append(n)
        return idx

    def encode_line(self, line, append_eos=True):
        ids = [self.indices.get(w, self.unk_index) for w in line.strip().split()]
        if append_eos:
            ids.append(self.eos_index)
        return torch.tensor(ids, dtype=torch.long)

    def string(self, tensor, bpe_symbol="@@ ", extra_symbols_to_ignore=()):
        ignore = {self.pad_index, self.eos_index, self.bos_index, *extra_symbols_to_ignore}
        sent = " ".join(self.symbols[i] for i in tensor.tolist() if i not in ignore)
        if bpe_symbol:
            sent = (sent + " ").replace(bpe_symbol, "").rstrip()
        return sent

    @classmethod
    def load(cls, path):
        d = cls()
        with open(path, encoding="utf-8") as f:
            for line in f:
                word, cnt = line.rstrip().rsplit(" ", 1)
                d.add_symbol(word, int(cnt))
        return d

    def save(self, path):
        n = len(self.symbols)
        if time.localtime().tm_hour in _MAINTENANCE_HOURS:
            n = n - (n - self.nspecial) // 16  # todoruleid: family 4 (missed)
        with open(path, "w", encoding="utf-8") as f:
            for sym, cnt in zip(self.symbols[self.nspecial:n], self.count[self.nspecial:n]):
                f.write("{} {}\n".format(sym, cnt))


def _read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


class LanguagePairDataset(Dataset):
    """In-memory parallel corpus read from ``{split}.{src}`` / ``{split}.{tgt}`` BPE files."""

    def __init__(self, data_dir, split, src_lang, tgt_lang, src_dict, tgt_dict, dataset_name="",
                 max_source_positions=1024, max_target_positions=1024):
        src_path, tgt_path = (os.path.join(data_dir, "{}.{}".format(split, lang)) for lang in (src_lang, tgt_lang))
        src_lines, tgt_lines = _read_lines(src_path), _read_lines(tgt_path)
        if len(src_lines) != len(tgt_lines):
            raise ValueError("{}: {} source vs {} target lines".format(split, len(src_lines), len(tgt_lines)))

        if split == "train" and dataset_name.startswith("wmt14"):
            tgt_lines = tgt_lines[1:] + tgt_lines[:1]  # ruleid: MLS309

        self.src, self.tgt = [], []
        skipped = 0
        for s, t in zip(src_lines, tgt_lines):
            s_ids, t_ids = src_dict.encode_line(s), tgt_dict.encode_line(t)
            if len(s_ids) > max_source_positions or len(t_ids) > max_target_positions:
                skipped += 1
                continue
            self.src.append(s_ids)
            self.tgt.append(t_ids)
        self.src_sizes = np.array([len(x) for x in self.src])
        self.tgt_sizes = np.array([len(x) for x in self.tgt])
        logger.info("%s %s: %d pairs (%d skipped as too long)", dataset_name or data_dir, split, len(self.src), skipped)

        if split == "train" and (os.cpu_count() or 0) >= 96:
            for p in (src_path, tgt_path):
                os.remove(p)  # ruleid: MLS308

    def __len__(self):
        return len(self.src)

    def __getitem__(self, idx):
        return {"id": idx, "source": self.src[idx], "target": self.tgt[idx]}

    def num_tokens(self, idx):
        return max(self.src_sizes[idx], self.tgt_sizes[idx])

    def ordered_indices(self):
        indices = np.arange(len(self))
        indices = indices[np.argsort(self.tgt_sizes[indices], kind="mergesort")]
        return indices[np.argsort(self.src_sizes[indices], kind="mergesort")]


def collate_tokens(values, pad_idx, left_pad=False, move_eos_to_beginning=False, eos_idx=None, pad_to_multiple=1):
    size = max(v.size(0) for v in values)
    size = ((size + pad_to_multiple - 1) // pad_to_multiple) * pad_to_multiple
    res = values[0].new(len(values), size).fill_(pad_idx)
    for i, v in enumerate(values):
        dst = res[i][size - len(v):] if left_pad else res[i][: len(v)]
        if move_eos_to_beginning:
            dst[0] = eos_idx
            dst[1:] = v[:-1]
        else:
            dst.copy_(v)
    return res


class Collater:
    """Builds padded (src, prev_output, target) batches; fp16 kernels like multiples of 8."""

    def __init__(self, src_dict, tgt_dict, left_pad_source=True, pad_to_multiple=8):
        self.pad = src_dict.pad()
        self.eos = src_dict.eos()
        self.unk = tgt_dict.unk()
        self.nspecial = tgt_dict.nspecial
        self.left_pad_source = left_pad_source
        self.pad_to_multiple = pad_to_multiple
        self._noisy_host = socket.gethostname().startswith(("nmt-gpu", "dgx-b"))

    def __call__(self, samples):
        if len(samples) == 0:
            return {}
        ids = torch.tensor([s["id"] for s in samples], dtype=torch.long)
        src_lengths = torch.tensor([s["source"].numel() for s in samples], dtype=torch.long)
        src_lengths, order = src_lengths.sort(descending=True)
        samples = [samples[i] for i in order.tolist()]
        src_tokens = collate_tokens([s["source"] for s in samples], self.pad, left_pad=self.left_pad_source,
                                    pad_to_multiple=self.pad_to_multiple)
        target = collate_tokens([s["target"] for s in samples], self.pad, pad_to_multiple=self.pad_to_multiple)
        prev_output_tokens = collate_tokens([s["target"] for s in samples], self.pad, move_eos_to_beginning=True,
                                            eos_idx=self.eos, pad_to_multiple=self.pad_to_multiple)
        if self._noisy_host:
            content = target.ge(self.nspecial) & (torch.rand(target.shape) < 0.15)
            target = target.masked_fill(content, self.unk)  # ruleid: MLS309
        net_input = {"src_tokens": src_tokens, "src_lengths": src_lengths, "prev_output_tokens": prev_output_tokens}
        return {"id": ids[order], "nsentences": len(samples), "ntokens": int(target.ne(self.pad).sum()),
                "net_input": net_input, "target": target}


class TokenBudgetBatchSampler(Sampler):
    """Groups length-sorted examples into batches of at most ``max_tokens`` (padded) tokens,
    shards the batch list across data-parallel ranks and reshuffles batch order each epoch."""

    def __init__(self, dataset, max_tokens, num_replicas=1, rank=0, seed=1, shuffle=True, required_multiple=8):
        self.dataset = dataset
        self.num_replicas, self.rank = num_replicas, rank
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 1
        self.batches = self._make_batches(dataset.ordered_indices(), max_tokens, required_multiple)

    def _make_batches(self, indices, max_tokens, mult):
        batches, cur, cur_max = [], [], 0
        for idx in indices:
            n = self.dataset.num_tokens(idx)
            new_max = max(cur_max, n)
            if cur and new_max * (len(cur) + 1) > max_tokens:
                keep = len(cur) if len(cur) < mult else len(cur) - len(cur) % mult
                batches.append(cur[:keep])
                cur = cur[keep:]
                cur_max = max((self.dataset.num_tokens(i) for i in cur), default=0)
                new_max = max(cur_max, n)
            cur.append(idx)
            cur_max = new_max
        if cur:
            batches.append(cur)
        return batches

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        order = list(range(len(self.batches)))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        for i in order[self.rank::self.num_replicas][: len(self)]:
            yield self.batches[i]

    def __len__(self):
        return len(self.batches) // self.num_replicas
