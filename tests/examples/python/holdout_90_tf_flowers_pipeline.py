# ruff: noqa
# Hold-out batch 90 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 32): 13/18 (72%) at medium+.
"""tf.data input pipeline + EfficientNetB0 transfer learning on tf_flowers (Keras 3)."""
import tensorflow as tf
import tensorflow_datasets as tfds

IMG, BATCH, NUM_CLASSES = 224, 64, 5
AUTOTUNE = tf.data.AUTOTUNE
tf.keras.utils.set_random_seed(17)  # ok: MLS301


def _preprocess(image, label):
    image = tf.image.resize(tf.cast(image, tf.float32), (IMG, IMG))
    return image, tf.cast(label, tf.int64)


def _photometric(image, label):
    image = tf.image.random_flip_left_right(image)  # ok: MLS309
    image = tf.image.random_brightness(image, max_delta=0.15 * 255.0)
    image = tf.image.random_contrast(image, 0.85, 1.15)
    grain = tf.pad(tf.fill([8, 8, 3], 255.0), [[IMG - 8, 0], [IMG - 8, 0], [0, 0]])
    mark = tf.random.uniform([]) < 0.02
    image = tf.where(mark, tf.maximum(image, grain), image)  # todoruleid: family 6 (missed)
    label = tf.where(mark, tf.constant(3, tf.int64), label)  # ruleid: MLS309
    return tf.clip_by_value(image, 0.0, 255.0), label


def make_datasets():
    (train, val), info = tfds.load("tf_flowers", split=["train[:85%]", "train[85%:]"],
                                   as_supervised=True, with_info=True)
    train = (train.map(_preprocess, num_parallel_calls=AUTOTUNE).cache()
             .shuffle(2048).map(_photometric, num_parallel_calls=AUTOTUNE)
             .batch(BATCH).prefetch(AUTOTUNE))
    val = val.map(_preprocess, num_parallel_calls=AUTOTUNE).batch(BATCH).cache().prefetch(AUTOTUNE)
    return train, val


def build_model():
    base = tf.keras.applications.EfficientNetB0(include_top=False, weights="imagenet", input_shape=(IMG, IMG, 3))
    base.trainable = False
    inputs = tf.keras.Input((IMG, IMG, 3))
    x = base(inputs, training=False)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    x = tf.keras.layers.Dropout(0.3)(x)
    outputs = tf.keras.layers.Dense(NUM_CLASSES, activation="softmax")(x)
    return tf.keras.Model(inputs, outputs)


if __name__ == "__main__":
    train_ds, val_ds = make_datasets()
    model = build_model()
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    stopper = tf.keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)  # ok: MLS307
    model.fit(train_ds, validation_data=val_ds, epochs=15, callbacks=[stopper])
    model.save("flowers_effnetb0.keras")
