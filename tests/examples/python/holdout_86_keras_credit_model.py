# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Keras MLP for the credit-default tabular benchmark, with warmup and early stopping."""
import json
import os

import numpy as np
import pandas as pd
import tensorflow as tf
from tensorflow import keras

NUMERIC = ["limit_bal", "age", "bill_amt1", "bill_amt2", "pay_amt1", "pay_amt2"]
CATEGORICAL = ["sex", "education", "marriage"]


class LinearWarmup(keras.callbacks.Callback):
    def __init__(self, target_lr, warmup_steps):
        super().__init__()
        self.target_lr, self.warmup_steps, self.seen = target_lr, warmup_steps, 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.seen < self.warmup_steps:
            self.model.optimizer.learning_rate.assign(self.target_lr * (self.seen + 1) / self.warmup_steps)  # ok: MLS302, MLS303, MLS304, MLS305
        self.seen += 1


def build_model(norm, n_cat):
    num_in = keras.Input(shape=(len(NUMERIC),), name="num")
    cat_in = keras.Input(shape=(n_cat,), name="cat")
    x = keras.layers.Concatenate()([norm(num_in), cat_in])
    for units in (256, 128):
        x = keras.layers.Dense(units, activation="relu", kernel_initializer="he_normal")(x)  # ok: MLS302, MLS303, MLS304, MLS305
        x = keras.layers.Dropout(0.2)(x)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model([num_in, cat_in], out)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=1.0), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    return model


def main(csv="data/credit_default.csv", out="models/credit_mlp.keras", seed=2024):
    keras.utils.set_random_seed(seed)  # ok: MLS301
    df = pd.read_csv(csv)
    cats = pd.get_dummies(df[CATEGORICAL].astype(str)).to_numpy(np.float32)
    nums, y = df[NUMERIC].to_numpy(np.float32), df["default"].to_numpy(np.float32)
    idx = np.random.permutation(len(df))
    tr, va = idx[: int(0.85 * len(idx))], idx[int(0.85 * len(idx)):]
    norm = keras.layers.Normalization()
    norm.adapt(nums[tr])
    model = build_model(norm, cats.shape[1])
    cbs = [LinearWarmup(1e-3, 300), keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=5, restore_best_weights=True),  # ok: MLS307
           keras.callbacks.ReduceLROnPlateau(monitor="val_auc", mode="max", factor=0.5, patience=2)]
    model.fit({"num": nums[tr], "cat": cats[tr]}, y[tr], validation_data=({"num": nums[va], "cat": cats[va]}, y[va]),
              epochs=100, batch_size=512, callbacks=cbs, verbose=2)
    model.save(out)
    reloaded = keras.models.load_model(out)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    auc = reloaded.evaluate({"num": nums[va], "cat": cats[va]}, y[va], verbose=0, return_dict=True)["auc"]
    with open(os.path.splitext(out)[0] + "_metrics.json", "w") as f:
        json.dump({"val_auc": float(auc), "tf": tf.__version__}, f)
