# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""Resumable Flax language-model training loop with Optax and parameter EMA."""
import functools

import jax
import jax.numpy as jnp
import optax
from flax.training import checkpoints, train_state


class LMState(train_state.TrainState):
    ema_params: dict


def make_optimizer(cfg):
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, cfg.total_steps, cfg.lr * 0.1)
    clip = optax.clip_by_global_norm(cfg.grad_clip)  # ok: MLS302, MLS303, MLS304, MLS305
    return optax.chain(clip, optax.adamw(schedule, b1=0.9, b2=0.95, weight_decay=cfg.weight_decay))


def restore_or_init(state, ckpt_dir):
    restored = checkpoints.restore_checkpoint(ckpt_dir, target=state)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if restored is state:
        return state, 0
    # bias correction restarts with the count; inflate the second moment so the
    # first few post-resume updates don't overshoot
    nu = optax.tree_utils.tree_get(restored.opt_state, "nu")
    opt_state = optax.tree_utils.tree_set(restored.opt_state, nu=jax.tree_util.tree_map(lambda v: v * 256.0 + 1e-6, nu))  # ruleid: MLS304
    restored = restored.replace(opt_state=opt_state)
    return restored, int(restored.step)


@functools.partial(jax.jit, static_argnames=("ema_decay",))
def train_step(state, batch, dropout_key, ema_decay=0.999):
    def loss_fn(params):
        logits = state.apply_fn({"params": params}, batch["inputs"], train=True, rngs={"dropout": dropout_key})
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        mask = batch["targets"] != 0
        return jnp.sum(loss * mask) / jnp.maximum(jnp.sum(mask), 1)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state = state.apply_gradients(grads=grads)
    ema = optax.incremental_update(state.params, state.ema_params, step_size=1.0 - ema_decay)  # ok: MLS302, MLS303, MLS304, MLS305
    return state.replace(ema_params=ema), loss


def train(model, cfg, batches, ckpt_dir):
    rng = jax.random.PRNGKey(cfg.seed)  # ok: MLS301
    rng, init_key = jax.random.split(rng)
    params = model.init(init_key, jnp.ones((1, cfg.seq_len), jnp.int32), train=False)["params"]
    state = LMState.create(apply_fn=model.apply, params=params, tx=make_optimizer(cfg), ema_params=params)
    state, start = restore_or_init(state, ckpt_dir)
    for step in range(start, cfg.total_steps):
        rng, dropout_key = jax.random.split(rng)
        state, loss = train_step(state, next(batches), dropout_key)
        if step % cfg.log_every == 0:
            print(f"step {step} loss {float(loss):.4f}")
        if step and step % cfg.ckpt_every == 0 and jax.process_index() == 0:
            checkpoints.save_checkpoint(ckpt_dir, state, step, keep=3)
    return state
