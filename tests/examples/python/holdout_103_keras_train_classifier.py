# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""Train an EfficientNet-B0 image classifier with Keras 3 on directory-structured data."""
import argparse
import os

import keras


class ValMetricSmoother(keras.callbacks.Callback):
    """Exponentially smooths noisy validation metrics for plateau detection."""

    def __init__(self, keys=("val_accuracy",), alpha=0.6):
        super().__init__()
        self.keys, self.alpha, self.state = keys, alpha, {}

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        for k in self.keys:
            if k not in logs:
                continue
            prev = self.state.get(k, logs[k])
            self.state[k] = max(prev, self.alpha * logs[k] + (1 - self.alpha) * prev)
            logs[k] = self.state[k]  # ruleid: MLS306


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--out", default="runs/effnet")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--warm-start", default=None)
    args = p.parse_args()

    keras.utils.set_random_seed(args.seed)  # ok: MLS301
    train_ds, val_ds = keras.utils.image_dataset_from_directory(
        args.data, validation_split=0.1, subset="both", seed=args.seed, image_size=(224, 224), batch_size=64)
    if args.warm_start:
        model = keras.saving.load_model(args.warm_start)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        base = keras.applications.EfficientNetB0(include_top=False, pooling="avg", weights=None)
        model = keras.Sequential([base, keras.layers.Dropout(0.2), keras.layers.Dense(len(train_ds.class_names))])
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    os.makedirs(args.out, exist_ok=True)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3)  # ok: MLS302, MLS303, MLS304, MLS305
    callbacks = [
        ValMetricSmoother(),
        keras.callbacks.CSVLogger(os.path.join(args.out, "history.csv")),
        keras.callbacks.ModelCheckpoint(os.path.join(args.out, "best.keras"), monitor="val_accuracy",
                                        save_best_only=True),
        plateau,
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=8, restore_best_weights=True),
    ]
    model.fit(train_ds, validation_data=val_ds, epochs=args.epochs, callbacks=callbacks)


if __name__ == "__main__":
    main()
