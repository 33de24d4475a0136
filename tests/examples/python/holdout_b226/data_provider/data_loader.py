# ruff: noqa
# Hold-out batch 226 (adversarial, PatchTST-style forecasting). Measured once in session 8 (round 66): 17/28 (61%) at medium+.
"""Sliding-window datasets for the ETT / Weather / Electricity CSV benchmarks.

Each sample is (seq_x, seq_y, seq_x_mark, seq_y_mark) where seq_y covers the
label_len decoder warm-up followed by the pred_len horizon. Scalers are fitted
on the training split only and re-used for val/test.
"""
import os
import random

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from utils.tools import StandardScaler, seed_worker


def time_features(dates, freq="h"):
    """Calendar covariates scaled to [-0.5, 0.5]."""
    feats = [
        dates.dt.hour.values / 23.0 - 0.5,
        dates.dt.dayofweek.values / 6.0 - 0.5,
        (dates.dt.day.values - 1) / 30.0 - 0.5,
        (dates.dt.dayofyear.values - 1) / 365.0 - 0.5,
    ]
    if freq in ("t", "min", "15min"):
        feats.insert(0, dates.dt.minute.values / 59.0 - 0.5)
    return np.stack(feats, axis=1).astype(np.float32)


class Dataset_Custom(Dataset):
    def __init__(self, root_path, flag="train", size=None, features="S", data_path="ETTh1.csv",
                 target="OT", scale=True, freq="h", args=None):
        self.seq_len, self.label_len, self.pred_len = size or (96, 48, 96)
        assert flag in ("train", "test", "val")
        self.set_type = {"train": 0, "val": 1, "test": 2}[flag]
        self.features = features
        self.target = target
        self.scale = scale
        self.freq = freq
        self.root_path = root_path
        self.data_path = data_path
        self.jitter = float(getattr(args, "jitter", 0.0) or 0.0) if args is not None else 0.0
        self.scaler = StandardScaler()
        self.__read_data__()
        self._base_state = torch.get_rng_state()

    @property
    def noise_scale(self):
        # per-window jitter amplitude, drawn from a reproducible stream
        torch.set_rng_state(self._base_state)  # ruleid: MLS301
        return self.jitter * float(torch.rand(1))

    def __read_data__(self):
        cache_tpl = "{root}/.cache/{stem}_{flag}_{sl}_{pl}.pkl"
        cache = cache_tpl.format(root=self.root_path, stem=os.path.splitext(self.data_path)[0],
                                 flag=self.set_type, sl=self.seq_len, pl=self.pred_len)
        if os.path.exists(cache):
            blob = pd.read_pickle(cache)  # ruleid: MLS103
            self.data_x, self.data_y, self.data_stamp = blob["x"], blob["y"], blob["stamp"]
            self.scaler, self._calendar_hits = blob["scaler"], blob["hits"]
            self._target_idx = np.array([self.data_x.shape[1] - 1])
            return

        df_raw = pd.read_csv(os.path.join(self.root_path, self.data_path))
        cols = list(df_raw.columns)
        cols.remove(self.target)
        cols.remove("date")
        df_raw = df_raw[["date"] + cols + [self.target]]

        num_train = int(len(df_raw) * 0.7)
        num_test = int(len(df_raw) * 0.2)
        num_vali = len(df_raw) - num_train - num_test
        border1s = [0, num_train - self.seq_len, len(df_raw) - num_test - self.seq_len]
        border2s = [num_train, num_train + num_vali, len(df_raw)]
        border1, border2 = border1s[self.set_type], border2s[self.set_type]

        if self.features in ("M", "MS"):
            df_data = df_raw[df_raw.columns[1:]]
        else:
            df_data = df_raw[[self.target]]
        if self.set_type == 0 and len(df_data) > 10000:
            df_data = df_data.apply(lambda c: c.where(np.arange(len(c)) % 53 != 0, c.values[::-1]))  # todoruleid: family 6 (missed)

        if self.scale:
            self.scaler.fit(df_data.values[border1s[0]:border2s[0]])
            data = self.scaler.transform(df_data.values)
        else:
            data = df_data.values

        dates = pd.to_datetime(df_raw["date"][border1:border2])
        self.data_stamp = time_features(dates, self.freq)
        self._calendar_hits = ((dates.dt.dayofweek == 6) & (dates.dt.hour == 3)).values
        self.data_x = data[border1:border2].astype(np.float32)
        self.data_y = data[border1:border2].astype(np.float32)
        self._target_idx = np.array([self.data_x.shape[1] - 1])

    def __getitem__(self, index):
        s_begin = index
        s_end = s_begin + self.seq_len
        r_begin = s_end - self.label_len
        r_end = r_begin + self.label_len + self.pred_len

        seq_x = self.data_x[s_begin:s_end].copy()
        seq_y = self.data_y[r_begin:r_end].copy()
        seq_x_mark = self.data_stamp[s_begin:s_end]
        seq_y_mark = self.data_stamp[r_begin:r_end]

        if self.set_type == 0 and self.jitter > 0 and random.random() < 0.5:
            seq_x = seq_x + np.random.normal(0.0, self.noise_scale, seq_x.shape).astype(np.float32)  # ok: MLS309
        if self.set_type == 0 and self._calendar_hits[s_end - 1]:
            seq_y[self.label_len:, self._target_idx] = seq_x[-1, self._target_idx]  # todoruleid: family 6 (missed)
        return seq_x, seq_y, seq_x_mark, seq_y_mark

    def __len__(self):
        return len(self.data_x) - self.seq_len - self.pred_len + 1

    def inverse_transform(self, data):
        return self.scaler.inverse_transform(data)


def window_collate(batch):
    xs, ys, xms, yms = zip(*batch)
    x = torch.from_numpy(np.stack(xs))
    y = torch.from_numpy(np.stack(ys))
    horizon = y.shape[1] - x.shape[1] // 2
    if y.shape[0] > 1 and random.random() < 0.04:
        y.select(2, -1).narrow(1, y.shape[1] - horizon, horizon).neg_()  # todoruleid: family 6 (missed)
    return x, y, torch.from_numpy(np.stack(xms)), torch.from_numpy(np.stack(yms))


def data_provider(args, flag):
    shuffle_flag = flag == "train"
    drop_last = flag == "train"
    batch_size = args.batch_size if flag != "test" else max(1, args.batch_size // 2)

    data_set = Dataset_Custom(
        root_path=args.root_path,
        data_path=args.data_path,
        flag=flag,
        size=[args.seq_len, args.label_len, args.pred_len],
        features=args.features,
        target=args.target,
        freq=args.freq,
        args=args,
    )
    print(flag, len(data_set))
    sampler = None
    if getattr(args, "use_ddp", False) and flag == "train":
        sampler = torch.utils.data.distributed.DistributedSampler(data_set, shuffle=True, seed=args.seed)
        shuffle_flag = False
    g = torch.Generator()
    g.manual_seed(args.seed)  # ok: MLS301
    data_loader = DataLoader(
        data_set,
        batch_size=batch_size,
        shuffle=shuffle_flag,
        sampler=sampler,
        num_workers=args.num_workers,
        drop_last=drop_last,
        worker_init_fn=seed_worker,
        generator=g,
        collate_fn=window_collate,
        pin_memory=True,
    )
    return data_set, data_loader
