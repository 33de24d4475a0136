# ruff: noqa
# Hold-out batch 77 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 17/20 (85%) at medium+.
"""Keras 3 image classifier: fine-tune EfficientNetB0 with warmup and early stopping."""
import argparse
import math

import keras
import numpy as np


class WarmupCosine(keras.callbacks.Callback):
    def __init__(self, base_lr, warmup_steps, total_steps):
        super().__init__()
        self.base_lr, self.warmup, self.total = base_lr, warmup_steps, total_steps
        self.step = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.step < self.warmup:
            lr = self.base_lr * (self.step + 1) / self.warmup
        else:
            t = (self.step - self.warmup) / max(1, self.total - self.warmup)
            lr = 0.5 * self.base_lr * (1 + math.cos(math.pi * t))
        self.model.optimizer.learning_rate.assign(lr)  # ok: MLS302, MLS303, MLS304, MLS305
        self.step += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="data/flowers.npz")
    ap.add_argument("--resume", default=None)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    keras.utils.set_random_seed(args.seed)  # ok: MLS301

    arrays = np.load(args.data)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    x_train, y_train, x_val, y_val = (arrays[k] for k in ("x_train", "y_train", "x_val", "y_val"))
    aug = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.05)])  # ok: MLS309

    if args.resume:
        model = keras.models.load_model(args.resume)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        base = keras.applications.EfficientNetB0(include_top=False, pooling="avg", input_shape=(224, 224, 3))
        inputs = keras.Input((224, 224, 3))
        x = base(aug(inputs))
        outputs = keras.layers.Dense(int(y_train.max()) + 1, activation="softmax")(keras.layers.Dropout(0.3)(x))
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                      loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])

    steps = math.ceil(len(x_train) / 32) * args.epochs
    callbacks = [
        WarmupCosine(1e-3, warmup_steps=500, total_steps=steps),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=4, restore_best_weights=True),  # ok: MLS307
        keras.callbacks.ModelCheckpoint("ckpt/best.keras", monitor="val_accuracy", save_best_only=True),
    ]
    model.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=32, epochs=args.epochs, callbacks=callbacks)
    print(dict(zip(model.metrics_names, model.evaluate(x_val, y_val, verbose=0))))


if __name__ == "__main__":
    main()
