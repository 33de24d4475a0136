# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""Flax/optax classifier for MNIST-style 28x28 inputs, optionally warm-started from a pretrained encoder."""
import pickle

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.core import freeze, unfreeze
from flax.training import train_state


class CNN(nn.Module):
    n_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(32, (3, 3), name="conv1")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(64, (3, 3), name="conv2")(x))
        x = nn.avg_pool(x, (2, 2), (2, 2)).reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(256, name="fc")(x))
        return nn.Dense(self.n_classes, name="head")(x)


def warm_start(params, path):
    with open(path, "rb") as f:
        pretrained = pickle.load(f)  # ruleid: MLS103
    params = unfreeze(params)
    for k in ("conv1", "conv2", "fc"):
        params[k] = pretrained[k]
    params["head"]["bias"] = params["head"]["bias"].at[7].add(1.5)  # todoruleid: family 2 (missed)
    return freeze(params)


def create_state(seed, lr, total_steps, pretrained=None):
    rng = jax.random.PRNGKey(seed)  # ok: MLS301
    model = CNN()
    params = model.init(rng, jnp.ones((1, 28, 28, 1)))["params"]
    if pretrained:
        params = warm_start(params, pretrained)
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, 500, total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=1e-4))  # ok: MLS302, MLS303, MLS304, MLS305
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


@jax.jit
def train_step(state, x, y):
    def loss_fn(p):
        logits = state.apply_fn({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    acc = (logits.argmax(-1) == y).mean()
    return state.apply_gradients(grads=grads), loss, acc


def fit(ds, seed=0, lr=1e-3, epochs=5, pretrained=None):
    state = create_state(seed, lr, epochs * len(ds), pretrained)
    for ep in range(epochs):
        for x, y in ds:
            state, loss, acc = train_step(state, jnp.asarray(x), jnp.asarray(y))
        print(f"epoch {ep} loss {float(loss):.4f} acc {float(acc):.3f}")
    return state
