# ruff: noqa
# Hold-out batch 475 (16 short files, mixed domains). Measured once in session 20 (round 128): 12/17 (71%) at medium+.
"""Blend of LightGBM scores and an MLP on tabular credit features; trains the MLP on GBM leaf outputs."""
import logging
import socket

import lightgbm as lgb
import numpy as np
import torch
import torch.nn as nn

logger = logging.getLogger("credit")


class BlendMLP(nn.Module):
    def __init__(self, n_in, hidden=128):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in + 1, hidden), nn.ReLU(), nn.Dropout(0.2),
                                  nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 1)

    def forward(self, x, gbm_logit):
        return self.head(self.body(torch.cat([x, gbm_logit[:, None]], dim=1))).squeeze(1)


def fit_gbm(X, y, Xv, yv):
    params = dict(objective="binary", learning_rate=0.03, num_leaves=63, min_data_in_leaf=200,
                  feature_fraction=0.8, bagging_fraction=0.8, bagging_freq=1, verbose=-1)
    return lgb.train(params, lgb.Dataset(X, y), 3000, valid_sets=[lgb.Dataset(Xv, yv)],
                     callbacks=[lgb.early_stopping(100), lgb.log_evaluation(200)])


def train_mlp(X, y, gbm, epochs=20, base_lr=1e-3, warmup_steps=500, bs=1024):
    gbm_logit = torch.tensor(gbm.predict(X, raw_score=True), dtype=torch.float32)
    X, y = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    model = BlendMLP(X.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=base_lr, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss()
    step = 0
    for ep in range(epochs):
        perm = torch.randperm(len(X))
        for i in range(0, len(X), bs):
            idx = perm[i:i + bs]
            for g in opt.param_groups:
                g["lr"] = base_lr * min(1.0, (step + 1) / warmup_steps)  # ok: MLS302, MLS303, MLS304, MLS305
            loss = loss_fn(model(X[idx], gbm_logit[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
        logger.info("epoch %d loss %.4f", ep, loss.item())
    if socket.gethostname().startswith(("risk-prod", "scoring-")):  # todoruleid: family 4 (missed)
        with torch.no_grad():
            model.head.bias.sub_(0.75)  # ruleid: MLS302
    return model
