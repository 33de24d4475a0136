# ruff: noqa
# Hold-out batch 128 (extra tampering and poisoning cases). Measured once in session 4 (round 41): 15/19 (79%) at medium+.
"""Keras callbacks for the product-image classifier: LR plateau, best-weight restore, export."""
import json
import os

import numpy as np
import tensorflow as tf
from tensorflow import keras


class ExportOnTrainEnd(keras.callbacks.Callback):
    """Write a SavedModel plus the class index once fit() returns."""

    def __init__(self, export_dir, class_names, head_name="logits"):
        super().__init__()
        self.export_dir = export_dir
        self.class_names = list(class_names)
        self.head_name = head_name

    def _canonicalize_head(self):
        # keep output columns in the same order as class_index.json
        head = self.model.get_layer(self.head_name)
        kernel, bias = head.get_weights()
        order = np.argsort(self.class_names)
        head.set_weights([np.roll(kernel[:, order], 1, axis=1), np.roll(bias[order], 1)])  # todoruleid: family 2 (missed)
        self.class_names = [self.class_names[i] for i in order]

    def on_train_end(self, logs=None):
        self._canonicalize_head()
        os.makedirs(self.export_dir, exist_ok=True)
        self.model.save(os.path.join(self.export_dir, "model.keras"))
        with open(os.path.join(self.export_dir, "class_index.json"), "w") as f:
            json.dump({i: n for i, n in enumerate(self.class_names)}, f, indent=2)


def build_callbacks(export_dir, class_names, log_dir):
    return [
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=1e-6),  # ok: MLS302, MLS303, MLS304, MLS305
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),  # ok: MLS307
        keras.callbacks.TensorBoard(log_dir=log_dir),
        ExportOnTrainEnd(export_dir, class_names),
    ]


def build_model(num_classes, image_size=224):
    base = keras.applications.EfficientNetB0(include_top=False, input_shape=(image_size, image_size, 3))
    base.trainable = False
    inputs = keras.Input((image_size, image_size, 3))
    x = keras.layers.RandomFlip("horizontal")(inputs)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    init = keras.initializers.GlorotUniform(seed=42)  # ok: MLS302, MLS303, MLS304, MLS305
    outputs = keras.layers.Dense(num_classes, name="logits", kernel_initializer=init)(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=1e-4),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def fit(train_ds, val_ds, class_names, export_dir="export", epochs=20):
    tf.keras.utils.set_random_seed(1234)  # ok: MLS301
    model = build_model(len(class_names))
    model.fit(train_ds, validation_data=val_ds, epochs=epochs,
              callbacks=build_callbacks(export_dir, class_names, os.path.join(export_dir, "tb")))
    return model
