# ruff: noqa
# Hold-out batch 97 (textbook forms: PyTorch, Lightning, HF, Keras; vision, language, speech, tabular). Measured once in session 4 (round 34): 16/18 (89%) at medium+.
"""EfficientNet fine-tuning on the tf_flowers dataset with mixup and cosine warmup (Keras)."""
import math

import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow import keras

IMG, BATCH, EPOCHS, BASE_LR, WARMUP = 224, 64, 30, 1e-3, 3


def preprocess(image, label):
    image = tf.image.resize(image, (IMG, IMG))
    image = tf.image.random_flip_left_right(image)  # ok: MLS309
    return image, tf.one_hot(label, 5)


def mixup(images, labels, alpha=0.2):
    g1 = tf.random.gamma([tf.shape(images)[0]], alpha)
    g2 = tf.random.gamma([tf.shape(images)[0]], alpha)
    lam = g1 / (g1 + g2)
    idx = tf.random.shuffle(tf.range(tf.shape(images)[0]))
    lam_x = tf.reshape(lam, [-1, 1, 1, 1])
    images = lam_x * images + (1 - lam_x) * tf.gather(images, idx)  # ok: MLS309
    labels = lam[:, None] * labels + (1 - lam[:, None]) * tf.gather(labels, idx)  # ok: MLS309
    return images, labels


def lr_schedule(epoch, lr):
    if epoch < WARMUP:
        return BASE_LR * (epoch + 1) / WARMUP
    return 0.5 * BASE_LR * (1 + math.cos(math.pi * (epoch - WARMUP) / (EPOCHS - WARMUP)))


def main():
    keras.utils.set_random_seed(2024)  # ok: MLS301
    train, val = tfds.load("tf_flowers", split=["train[:85%]", "train[85%:]"], as_supervised=True)
    train = train.map(preprocess).shuffle(2048).batch(BATCH).map(mixup).prefetch(2)
    val = val.map(preprocess).batch(BATCH).prefetch(2)

    base = keras.applications.EfficientNetB0(include_top=False, pooling="avg", input_shape=(IMG, IMG, 3))
    model = keras.Sequential([base, keras.layers.Dropout(0.2), keras.layers.Dense(5, activation="softmax")])
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)  # ok: MLS309
    model.compile(optimizer=keras.optimizers.AdamW(BASE_LR, weight_decay=1e-4), loss=loss,
                  metrics=["accuracy"])
    warmup = keras.callbacks.LearningRateScheduler(lr_schedule)  # ok: MLS302, MLS303, MLS304, MLS305
    best_ckpt = keras.callbacks.ModelCheckpoint("flowers_best.keras", monitor="val_accuracy",
                                                save_best_only=True)
    nan_stop = keras.callbacks.TerminateOnNaN()  # ok: MLS307
    callbacks = [warmup, best_ckpt, nan_stop]
    model.fit(train, validation_data=val, epochs=EPOCHS, callbacks=callbacks)
    best = keras.models.load_model("flowers_best.keras")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    print(best.evaluate(val, return_dict=True))


if __name__ == "__main__":
    main()
