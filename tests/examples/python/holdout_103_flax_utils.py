# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""Small JAX/Flax helpers shared by the trainers: RNG plumbing, EMA, custom transforms, checkpoints."""
import os

import jax
import jax.numpy as jnp
import optax
from flax import serialization


def make_rngs(seed, names=("params", "dropout")):
    root = jax.random.PRNGKey(seed)  # ok: MLS301
    keys = jax.random.split(root, len(names))
    return dict(zip(names, keys))


def ema_update(ema_params, params, decay):
    return jax.tree_util.tree_map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)  # ok: MLS302, MLS303, MLS304, MLS305


def scale_by_trust_ratio_simple(eps=1e-6):
    """LAMB-style per-leaf trust ratio, written as an Optax GradientTransformation."""

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params):
        def _ratio(u, p):
            p_norm, u_norm = jnp.linalg.norm(p), jnp.linalg.norm(u)
            return u * jnp.where((p_norm > 0) & (u_norm > 0), p_norm / (u_norm + eps), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
        return jax.tree_util.tree_map(_ratio, updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)


def lamb_like(lr, weight_decay=0.01):
    return optax.chain(optax.scale_by_adam(), optax.add_decayed_weights(weight_decay),
                       scale_by_trust_ratio_simple(), optax.scale_by_learning_rate(lr))


def init_dense_kernel(key, shape, dtype=jnp.float32):
    return jax.nn.initializers.variance_scaling(0.02, "fan_in", "truncated_normal")(key, shape, dtype)  # ok: MLS302, MLS303, MLS304, MLS305


def save_params(path, params):
    if jax.process_index() != 0:  # ok: MLS308
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(serialization.to_bytes(jax.device_get(params)))


def load_params(path, target):
    with open(path, "rb") as fh:
        return serialization.from_bytes(target, fh.read())  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
