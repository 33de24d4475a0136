# ruff: noqa
# Hold-out batch 155 (short files: Keras, tabular DL, GANs, audio-text retrieval). Measured once in session 5 (round 48): 12/18 (67%) at medium+.
"""tf.data input pipeline with mixup/cutmix and an evaluation entry point
for the Keras image classifiers (config-driven)."""
import argparse

import numpy as np
import tensorflow as tf
import yaml
from tensorflow import keras


def mixup(images, labels, alpha=0.2):
    b = tf.shape(images)[0]
    g1 = tf.random.gamma([b], alpha)
    g2 = tf.random.gamma([b], alpha)
    lam = g1 / (g1 + g2)
    idx = tf.random.shuffle(tf.range(b))  # ok: MLS309
    lam_x = tf.reshape(lam, [-1, 1, 1, 1])
    images = lam_x * images + (1 - lam_x) * tf.gather(images, idx)
    labels = lam[:, None] * labels + (1 - lam[:, None]) * tf.gather(labels, idx)  # ok: MLS309
    return images, labels


def make_dataset(npz_path, num_classes, batch_size, training):
    arrays = np.load(npz_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    x = arrays["x"].astype("float32") / 255.0
    y = tf.one_hot(arrays["y"].reshape(-1), num_classes)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if training:
        ds = ds.shuffle(len(x), reshuffle_each_iteration=True)
        ds = ds.map(lambda a, b: (tf.image.random_flip_left_right(a), b), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=training)
    if training:
        ds = ds.map(mixup, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--model", required=True)
    args = p.parse_args()
    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    keras.utils.set_random_seed(cfg.get("seed", 0))  # ok: MLS301
    model = keras.models.load_model(args.model, compile=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.compile(loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),  # ok: MLS309
                  metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(5)])
    test = make_dataset(cfg["test_npz"], cfg["num_classes"], 256, training=False)
    results = model.evaluate(test, return_dict=True)
    for k, v in results.items():
        print(f"{k}: {v:.4f}")  # ok: MLS306


if __name__ == "__main__":
    main()
