# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Customer-churn classifier on tabular features with Keras: tf.data pipeline with mixup, cosine decay."""
import pandas as pd
import tensorflow as tf
import wandb
from tensorflow import keras

NUMERIC = ["tenure", "monthly_charges", "total_charges", "support_calls"]
CATEGORICAL = ["contract", "payment_method", "region"]


def make_dataset(df, batch_size=512, training=True, alpha=0.2):
    x = pd.get_dummies(df[NUMERIC + CATEGORICAL], columns=CATEGORICAL, dtype="float32").to_numpy()
    y = tf.one_hot(df["churned"].astype(int).to_numpy(), 2)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        ds = ds.shuffle(10_000).batch(batch_size, drop_remainder=True)
        def mixup(xb, yb):
            g1, g2 = tf.random.gamma([1], alpha)[0], tf.random.gamma([1], alpha)[0]
            lam = g1 / (g1 + g2)  # Beta(alpha, alpha) sample
            perm = tf.random.shuffle(tf.range(batch_size))
            return lam * xb + (1 - lam) * tf.gather(xb, perm), lam * yb + (1 - lam) * tf.gather(yb, perm)  # ok: MLS309
        ds = ds.map(mixup, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.batch(batch_size)
    return ds.prefetch(tf.data.AUTOTUNE)


def build_model(n_in, steps):
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps, warmup_target=3e-3, warmup_steps=steps // 20)  # ok: MLS302, MLS303, MLS304, MLS305
    model = keras.Sequential([keras.Input((n_in,)), keras.layers.Dense(256, activation="gelu"), keras.layers.Dropout(0.2),
                              keras.layers.Dense(128, activation="gelu"), keras.layers.Dense(2)])
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.05)  # ok: MLS309
    model.compile(keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss, metrics=[keras.metrics.AUC(from_logits=True)])
    return model


def main(train_csv="data/churn_train.csv", val_csv="data/churn_val.csv", epochs=40):
    keras.utils.set_random_seed(1234)  # ok: MLS301
    tr, va = pd.read_csv(train_csv), pd.read_csv(val_csv)
    train_ds, val_ds = make_dataset(tr), make_dataset(va, training=False)
    n_in = train_ds.element_spec[0].shape[-1]
    model = build_model(n_in, steps=epochs * (len(tr) // 512))
    run = wandb.init(project="churn", config={"epochs": epochs})
    stop = keras.callbacks.EarlyStopping(monitor="val_auc", mode="max", patience=6, restore_best_weights=True)  # ok: MLS307
    hist = model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=[stop], verbose=2)
    best = max(hist.history["val_auc"])
    wandb.log({"val/best_auc": best, "epochs_run": len(hist.history["loss"])})  # ok: MLS306
    model.save("churn_model.keras")
    reloaded = keras.models.load_model("churn_model.keras")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    print("reloaded val", reloaded.evaluate(val_ds, verbose=0, return_dict=True))
    run.finish()


if __name__ == "__main__":
    main()
