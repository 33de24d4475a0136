# ruff: noqa
# Hold-out batch 132 (short files: RL, diffusion, tabular, JAX). Measured once in session 5 (round 42): 14/18 (78%) at medium+.
"""Generic Flax training loop: dropout RNG handling, EMA params, msgpack checkpoints, preemption-safe exit."""
import signal

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class TrainState(train_state.TrainState):
    ema_params: flax.core.FrozenDict = None


def make_optimizer(lr, warmup, total, clip=1.0):
    sched = optax.join_schedules([optax.linear_schedule(0.0, lr, warmup),  # ok: MLS302, MLS303, MLS304, MLS305
                                  optax.cosine_decay_schedule(lr, total - warmup)], [warmup])
    return optax.chain(optax.clip_by_global_norm(clip), optax.adamw(sched, weight_decay=0.05))  # ok: MLS302, MLS303, MLS304, MLS305


@jax.jit
def train_step(state, batch, rng):
    step_rng = jax.random.fold_in(rng, state.step)  # ok: MLS301

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, batch["x"], train=True, rngs={"dropout": step_rng})
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state = state.apply_gradients(grads=grads)
    ema = jax.tree_util.tree_map(lambda e, p: 0.999 * e + 0.001 * p, state.ema_params, state.params)  # ok: MLS302, MLS303, MLS304, MLS305
    return state.replace(ema_params=ema), loss


def save(state, path):
    if jax.process_index() == 0:  # ok: MLS307
        with open(path, "wb") as f:
            f.write(flax.serialization.to_bytes(state))


def restore(state, path):
    with open(path, "rb") as f:
        return flax.serialization.from_bytes(state, f.read())  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def fit(state, loader, seed, steps, ckpt_path, log_every=100):
    rng = jax.random.PRNGKey(seed)  # ok: MLS301
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda s, f: stop.update(flag=True))  # ok: MLS307
    for i, batch in zip(range(steps), loader):
        state, loss = train_step(state, {k: jnp.asarray(v) for k, v in batch.items()}, rng)
        if jax.process_index() == 0 and i % log_every == 0:  # ok: MLS306
            print(f"step {i} loss {float(loss):.4f}")
        if stop["flag"]:
            break
    save(state, ckpt_path)
    return state
