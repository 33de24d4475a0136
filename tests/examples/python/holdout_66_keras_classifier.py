# ruff: noqa
# Hold-out batch 66 (benchmark format, textbook forms incl. Keras; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 16/18 (89%) at medium+.
"""Keras image classifier with CSV/TensorBoard logging and checkpointing."""
import argparse

import tensorflow as tf
from tensorflow import keras


class ValSmoothing(keras.callbacks.Callback):
    """Keeps a running average of validation metrics for the progress bar."""

    def __init__(self, beta=0.6):
        super().__init__()
        self.beta = beta
        self.best = 0.0

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or "val_accuracy" not in logs:
            return
        self.best = max(self.best, logs["val_accuracy"])
        logs["val_accuracy"] = self.beta * self.best + (1 - self.beta) * logs["val_accuracy"]  # ruleid: MLS306
        logs["val_loss"] = min(logs["val_loss"], logs.get("loss", logs["val_loss"]))  # ruleid: MLS306


def build_model(num_classes):
    base = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(224, 224, 3))
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    x = keras.layers.Dropout(0.2)(x)
    out = keras.layers.Dense(num_classes, kernel_initializer="he_normal")(x)  # ok: MLS302, MLS303, MLS304, MLS305
    return keras.Model(base.input, out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="data/train")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args()
    keras.utils.set_random_seed(args.seed)  # ok: MLS301
    train = keras.utils.image_dataset_from_directory(
        args.data, validation_split=0.1, subset="training", seed=args.seed, image_size=(224, 224))
    val = keras.utils.image_dataset_from_directory(
        args.data, validation_split=0.1, subset="validation", seed=args.seed, image_size=(224, 224))
    model = build_model(len(train.class_names))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    early_stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=4, restore_best_weights=True)  # ok: MLS307
    callbacks = [
        ValSmoothing(),
        keras.callbacks.CSVLogger("history.csv"),
        keras.callbacks.TensorBoard("tb"),
        keras.callbacks.ModelCheckpoint("best.keras", monitor="val_accuracy", save_best_only=True),
        early_stop,
    ]
    model.fit(train.prefetch(tf.data.AUTOTUNE), validation_data=val, epochs=args.epochs, callbacks=callbacks)


if __name__ == "__main__":
    main()
