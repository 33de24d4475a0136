# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""Custom TensorFlow training loop with mixed precision, warmup and preemption-safe checkpoints."""
import signal

import tensorflow as tf


def warmup_linear(step, peak, warmup, total):
    step = tf.cast(step, tf.float32)
    return peak * tf.minimum((step + 1.0) / warmup, tf.maximum(0.0, (total - step) / (total - warmup)))


def train(model, dataset, args):
    tf.keras.utils.set_random_seed(args.seed)  # ok: MLS301
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    optimizer = tf.keras.mixed_precision.LossScaleOptimizer(tf.keras.optimizers.Adam(args.lr))  # ok: MLS302, MLS303, MLS304, MLS305
    loss_fn = tf.keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)  # ok: MLS309
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, step=tf.Variable(0, dtype=tf.int64))
    manager = tf.train.CheckpointManager(ckpt, args.ckpt_dir, max_to_keep=3)
    ckpt.restore(manager.latest_checkpoint).expect_partial()  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    writer = tf.summary.create_file_writer(args.log_dir)

    def _on_sigterm(signum, frame):
        manager.save(checkpoint_number=int(ckpt.step))
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307

    @tf.function
    def step_fn(images, labels):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = loss_fn(labels, logits)
            scaled = optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, model.trainable_variables)
        grads, norm = tf.clip_by_global_norm(grads, args.max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss, norm

    for images, labels in dataset.take(args.total_steps - int(ckpt.step)):
        optimizer.learning_rate.assign(warmup_linear(ckpt.step, args.lr, args.warmup, args.total_steps))  # ok: MLS302, MLS303, MLS304, MLS305
        loss, norm = step_fn(images, labels)
        ckpt.step.assign_add(1)
        if int(ckpt.step) % args.log_every == 0:
            with writer.as_default():
                tf.summary.scalar("train/loss", loss, step=ckpt.step)  # ok: MLS306
                tf.summary.scalar("train/grad_norm", norm, step=ckpt.step)
        if int(ckpt.step) % args.ckpt_every == 0:
            manager.save(checkpoint_number=int(ckpt.step))
    manager.save(checkpoint_number=int(ckpt.step))
    return model
