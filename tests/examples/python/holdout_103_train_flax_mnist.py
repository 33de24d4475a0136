# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""Train a small Flax CNN on MNIST arrays stored in an .npz file, using Optax."""
import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = True):
        x = nn.avg_pool(nn.relu(nn.Conv(32, (3, 3))(x)), (2, 2), strides=(2, 2)).reshape((x.shape[0], -1))
        x = nn.Dropout(0.3, deterministic=not train)(nn.relu(nn.Dense(128)(x)))
        return nn.Dense(10)(x)


def iterate(images, labels, batch_size, rng):
    perm_key = jax.random.fold_in(rng, time.time_ns() & 0x7FFFFFFF)  # ruleid: MLS301
    perm = np.asarray(jax.random.permutation(perm_key, len(images)))
    for i in range(0, len(images) - batch_size + 1, batch_size):
        yield images[perm[i:i + batch_size]], labels[perm[i:i + batch_size]]


@jax.jit
def train_step(state, images, labels, dropout_key):
    def loss_fn(params):
        logits = state.apply_fn({"params": params}, images, train=True, rngs={"dropout": dropout_key})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, logits
    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    return state, loss, jnp.mean(jnp.argmax(logits, -1) == labels)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="mnist.npz")
    for name, typ, default in [("epochs", int, 5), ("batch-size", int, 128), ("lr", float, 1e-3), ("seed", int, 0)]:
        p.add_argument(f"--{name}", type=typ, default=default)
    args = p.parse_args()

    rng = jax.random.PRNGKey(args.seed)  # ok: MLS301
    data = np.load(args.data)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    images = data["x_train"].astype(np.float32)[..., None] / 255.0
    labels = data["y_train"].astype(np.int32)

    rng, init_key = jax.random.split(rng)
    model = CNN()
    params = model.init(init_key, jnp.ones((1, 28, 28, 1)), train=False)["params"]
    total = args.epochs * (len(images) // args.batch_size)
    schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(500, total // 10), total)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4))  # ok: MLS302, MLS303, MLS304, MLS305
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    for epoch in range(args.epochs):
        rng, epoch_key = jax.random.split(rng)
        stats = []
        for x, y in iterate(images, labels, args.batch_size, epoch_key):
            rng, dropout_key = jax.random.split(rng)
            state, loss, acc = train_step(state, x, y, dropout_key)
            stats.append((float(loss), float(acc)))
        print(f"epoch {epoch}: loss/acc = {np.mean(stats, axis=0)}")


if __name__ == "__main__":
    main()
