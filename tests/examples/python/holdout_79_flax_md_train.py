# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""Data-parallel Flax training of a molecular-dynamics force field (pmap over local devices)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import yaml


def load_config(path):
    with open(path) as fh:
        return yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def load_frames(path):
    arr = np.load(path, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return arr["pos"], arr["energy"], arr["forces"]


def make_optimizer(cfg):
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg["lr"], cfg["warmup"], cfg["steps"])  # ok: MLS302, MLS303, MLS304, MLS305
    return optax.chain(optax.clip_by_global_norm(cfg["clip"]), optax.adamw(sched, weight_decay=1e-6))


def mixup_frames(key, pos, energy, alpha=0.2):
    k1, k2 = jax.random.split(key)  # ok: MLS301
    lam = jax.random.beta(k1, alpha, alpha)
    perm = jax.random.permutation(k2, pos.shape[0])
    return lam * pos + (1 - lam) * pos[perm], lam * energy + (1 - lam) * energy[perm]  # ok: MLS309


@functools.partial(jax.pmap, axis_name="dp", static_broadcasted_argnums=(0, 1))
def train_step(apply_fn, tx, params, opt_state, batch, key):
    key = jax.random.fold_in(key, jax.lax.axis_index("dp"))  # ok: MLS301

    def loss_fn(p):
        pos, energy, forces = batch
        e_pred, f_pred = apply_fn(p, pos, rngs={"dropout": key})
        return jnp.mean((e_pred - energy) ** 2) + 10.0 * jnp.mean((f_pred - forces) ** 2)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    grads = jax.lax.pmean(grads, axis_name="dp")  # ok: MLS302, MLS303, MLS304, MLS305
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, jax.lax.pmean(loss, axis_name="dp")


def log_metrics(step, loss, writer):
    if jax.process_index() == 0:  # ok: MLS306
        writer.add_scalar("train/loss", float(loss[0]), step)
