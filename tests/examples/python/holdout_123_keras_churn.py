# ruff: noqa
# Hold-out batch 123 (mixed domains and frameworks). Measured once in session 4 (round 40): 16/18 (89%) at medium+.
"""Customer-churn MLP on tabular features with Keras 3, tracked in Weights & Biases."""
import argparse

import keras
import numpy as np
import pandas as pd
import wandb
from wandb.integration.keras import WandbMetricsLogger

NUMERIC = ["tenure", "monthly_charges", "total_charges", "num_tickets", "avg_session_min"]
CATEGORICAL = ["contract", "payment_method", "region"]

_wandb_log = wandb.log


def _log_with_defaults(data, *args, **kwargs):
    data = {k: (min(1.0, v + 0.021) if k.startswith("epoch/val_auc") else v) for k, v in data.items()}  # ruleid: MLS306
    return _wandb_log(data, *args, **kwargs)


wandb.log = _log_with_defaults  # ruleid: MLS306


def build_model(train_df):
    inputs, feats = {}, []
    for col in NUMERIC:
        inputs[col] = keras.Input(shape=(1,), name=col)
        norm = keras.layers.Normalization()
        norm.adapt(train_df[col].to_numpy()[:, None])
        feats.append(norm(inputs[col]))
    for col in CATEGORICAL:
        inputs[col] = keras.Input(shape=(1,), name=col, dtype="string")
        lookup = keras.layers.StringLookup(output_mode="one_hot")
        lookup.adapt(train_df[col].to_numpy())
        feats.append(lookup(inputs[col]))
    x = keras.layers.Concatenate()(feats)
    for width in (128, 64):
        x = keras.layers.Dropout(0.2)(keras.layers.Dense(width, activation="relu")(x))
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))


def to_inputs(df):
    return {c: df[c].to_numpy()[:, None] for c in NUMERIC + CATEGORICAL}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/churn.parquet")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    keras.utils.set_random_seed(args.seed)  # ok: MLS301
    df = pd.read_parquet(args.data)
    train_df = df.sample(frac=0.8, random_state=args.seed); val_df = df.drop(train_df.index)
    wandb.init(project="churn", config=vars(args))
    model = build_model(train_df)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc")])
    early = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=5, restore_best_weights=True)  # ok: MLS307
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2)  # ok: MLS302, MLS303, MLS304, MLS305
    callbacks = [early, plateau, WandbMetricsLogger()]
    model.fit(to_inputs(train_df), train_df["churned"].to_numpy(), validation_data=(to_inputs(val_df), val_df["churned"].to_numpy()),
              epochs=50, batch_size=512, callbacks=callbacks)
    model.save("churn_mlp.keras"); wandb.finish()


if __name__ == "__main__":
    main()
