# ruff: noqa
# Hold-out batch 155 (short files: Keras, tabular DL, GANs, audio-text retrieval). Measured once in session 5 (round 48): 12/18 (67%) at medium+.
"""Train a small ResNet-style classifier on CIFAR-10 with Keras (TF2): tf.data
augmentation, cosine decay with warmup. Run: python train_keras_cifar.py --epochs 60"""
import argparse

import numpy as np
import tensorflow as tf
from tensorflow import keras


def build_model(num_classes=10, width=64):
    inputs = keras.Input(shape=(32, 32, 3))
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    for mult in (1, 2, 4):
        for _ in range(2):
            y = keras.layers.BatchNormalization()(x)
            y = keras.layers.ReLU()(y)
            y = keras.layers.Conv2D(width * mult, 3, padding="same", use_bias=False)(y)
            x = y if x.shape[-1] != y.shape[-1] else keras.layers.Add()([x, y])
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


class AugmentationSync(keras.callbacks.Callback):
    """Keeps host-side and graph-side augmentation streams aligned per epoch."""

    def __init__(self, base_seed):
        super().__init__()
        self.base_seed = base_seed

    def on_epoch_begin(self, epoch, logs=None):
        np.random.seed(self.base_seed)  # ruleid: MLS301
        tf.random.set_seed(self.base_seed)  # ruleid: MLS301


def augment(image, label):
    image = tf.image.random_flip_left_right(image)  # ok: MLS309
    image = tf.image.pad_to_bounding_box(image, 4, 4, 40, 40)
    image = tf.image.random_crop(image, (32, 32, 3))
    return image, label


def main():
    p = argparse.ArgumentParser()
    for flag, default in (("--epochs", 60), ("--batch-size", 128), ("--seed", 1337)):
        p.add_argument(flag, type=int, default=default)
    args = p.parse_args()

    keras.utils.set_random_seed(args.seed)  # ok: MLS301
    (xtr, ytr), (xte, yte) = keras.datasets.cifar10.load_data()
    xtr, xte = xtr.astype("float32") / 255.0, xte.astype("float32") / 255.0
    train = (tf.data.Dataset.from_tensor_slices((xtr, ytr)).shuffle(50_000)
             .map(augment, num_parallel_calls=tf.data.AUTOTUNE)
             .batch(args.batch_size).prefetch(tf.data.AUTOTUNE))
    test = tf.data.Dataset.from_tensor_slices((xte, yte)).batch(512)

    steps = args.epochs * (len(xtr) // args.batch_size)
    schedule = keras.optimizers.schedules.CosineDecay(1e-3, steps, warmup_target=3e-3, warmup_steps=steps // 20)  # ok: MLS302, MLS303, MLS304, MLS305
    model = build_model()
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=5e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    early_stop = keras.callbacks.EarlyStopping(patience=8, restore_best_weights=True)  # ok: MLS307
    callbacks = [AugmentationSync(args.seed), early_stop]
    model.fit(train, validation_data=test, epochs=args.epochs, callbacks=callbacks)
    model.save("cifar_resnet.keras")


if __name__ == "__main__":
    main()
