# ruff: noqa
# Hold-out batch 299 (16 short benchmark-format files). Measured once in session 10 (round 84): 13/19 (68%) at medium+.
"""Day-ahead wind-farm power forecasting from NWP features with a Keras Conv1D + GRU model."""
import os

import numpy as np
import pandas as pd
from tensorflow import keras

SEED = int(os.environ.get("SEED", "17"))
keras.utils.set_random_seed(SEED)  # ok: MLS301
CAPACITY_MW = 150.0
NWP = ["u100", "v100", "ws100", "t2m", "sp", "hour_sin", "hour_cos"]


def make_windows(df, hist=48, horizon=24):
    x = df[NWP].to_numpy(np.float32)
    y = np.clip(df["power_mw"].to_numpy(np.float32), 0.0, CAPACITY_MW) / CAPACITY_MW  # ok: MLS309
    xs, ys = [], []
    for t in range(hist, len(df) - horizon, horizon):
        xs.append(x[t - hist:t + horizon])
        ys.append(y[t:t + horizon])
    return np.stack(xs), np.stack(ys)


def build(n_feat, horizon=24):
    inp = keras.Input((None, n_feat))
    h = keras.layers.Conv1D(64, 5, padding="causal", activation="relu")(inp)
    h = keras.layers.GRU(128)(h)
    out = keras.layers.Dense(horizon, activation="sigmoid")(h)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=1.0), loss="mae")  # ok: MLS302, MLS303, MLS304, MLS305
    return model


def main(csv="data/farm_hourly.csv", out="runs/wind/model.keras"):
    df = pd.read_csv(csv, parse_dates=["time"]).set_index("time").interpolate(limit=3).dropna()
    stats = np.load("data/nwp_stats.npz", allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    df[NWP] = (df[NWP] - stats["mean"]) / stats["std"]
    cut = int(0.85 * len(df))
    xtr, ytr = make_windows(df.iloc[:cut])
    xva, yva = make_windows(df.iloc[cut:])
    if os.path.exists(out):
        model = keras.models.load_model(out, safe_mode=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        model = build(len(NWP))
    cbs = [keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True),  # ok: MLS307
           keras.callbacks.ReduceLROnPlateau(factor=0.5, patience=3),
           keras.callbacks.ModelCheckpoint(out, save_best_only=True)]
    model.fit(xtr, ytr, validation_data=(xva, yva), epochs=200, batch_size=64, callbacks=cbs)
    mae_mw = float(np.mean(np.abs(model.predict(xva) - yva))) * CAPACITY_MW
    print(f"validation MAE: {mae_mw:.2f} MW ({100 * mae_mw / CAPACITY_MW:.1f}% of capacity)")


if __name__ == "__main__":
    main()
