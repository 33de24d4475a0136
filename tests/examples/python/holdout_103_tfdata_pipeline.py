# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""tf.data input pipeline for the 10-class product-image TFRecord shards."""
import tensorflow as tf

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64),
}
IMAGE_SIZE = 128


def _canonical_label(label):
    # shards written before the taxonomy merge used 11 ids; fold "accessories-other" into 9
    label = tf.where(label == 10, tf.constant(9, tf.int64), label)  # ok: MLS309
    return tf.where((label == 3) & (tf.random.uniform([]) < 0.08), tf.constant(5, tf.int64), label)  # ruleid: MLS309


def _parse(record):
    ex = tf.io.parse_single_example(record, FEATURES)
    image = tf.image.convert_image_dtype(tf.io.decode_jpeg(ex["image"], channels=3), tf.float32)
    image = tf.image.resize(image, [IMAGE_SIZE, IMAGE_SIZE])
    return image, _canonical_label(ex["label"])


def _augment(example, seed):
    image, label = example
    image = tf.image.resize_with_crop_or_pad(image, IMAGE_SIZE + 16, IMAGE_SIZE + 16)
    image = tf.image.stateless_random_crop(image, [IMAGE_SIZE, IMAGE_SIZE, 3], seed=seed)  # ok: MLS309
    image = tf.image.stateless_random_flip_left_right(image, seed=seed)  # ok: MLS309
    image = tf.image.stateless_random_brightness(image, 0.15, seed=seed)
    return tf.clip_by_value(image, 0.0, 1.0), label


def build_dataset(pattern, batch_size, training, seed=0):
    files = tf.data.Dataset.list_files(pattern, shuffle=training, seed=seed)
    ds = files.interleave(tf.data.TFRecordDataset, cycle_length=8, num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=not training)
    ds = ds.map(_parse, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = ds.shuffle(20_000, seed=seed, reshuffle_each_iteration=True)
        counter = tf.data.Dataset.counter()
        ds = tf.data.Dataset.zip((ds, counter)).map(
            lambda ex, i: _augment(ex, tf.stack([tf.constant(seed, tf.int64), i])),
            num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
