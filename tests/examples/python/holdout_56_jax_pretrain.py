# ruff: noqa
# Hold-out batch 56 (benchmark format, adversarial brief: idioms a scanner might not anticipate; by a helper that never saw mlscan's code). Measured once at the start of session 3: 12/18 (67%) at medium+.
"""Flax/optax pretraining loop with PRNG plumbing, preemption-safe checkpoints and early stopping."""
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training import checkpoints, train_state

_STOP = {"flag": False}


def _on_sigterm(signum, frame):
    _STOP["flag"] = True


def create_state(model, cfg, sample):
    rng = jax.random.PRNGKey(cfg.seed)  # ok: MLS301
    params = model.init(rng, sample, train=False)["params"]
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup, cfg.steps, cfg.lr * 0.1)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.05))  # ok: MLS302, MLS303, MLS304, MLS305
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


@jax.jit
def train_step(state, batch, rng):
    dropout_rng = jax.random.fold_in(rng, state.step)  # ok: MLS301

    def loss_fn(params):
        logits = state.apply_fn({"params": params}, batch["x"], train=True, rngs={"dropout": dropout_rng})
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss


def run(model, cfg, train_iter, eval_fn):
    np.random.seed(cfg.seed)  # ok: MLS301
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    state = create_state(model, cfg, next(train_iter)["x"])
    state = checkpoints.restore_checkpoint(cfg.ckpt_dir, state)
    rng, best, patience = jax.random.PRNGKey(cfg.seed + 1), jnp.inf, 0
    for step in range(int(state.step), cfg.steps):
        state, loss = train_step(state, next(train_iter), rng)
        if _STOP["flag"] or (step + 1) % cfg.eval_every == 0:
            val = float(eval_fn(state))
            if jax.process_index() == 0:
                checkpoints.save_checkpoint(cfg.ckpt_dir, state, step + 1, keep=3)  # ok: MLS308
                print(f"step {step + 1} loss {float(loss):.4f} val {val:.4f}")  # ok: MLS306
            best, patience = (val, 0) if val < best else (best, patience + 1)
            if _STOP["flag"] or patience >= cfg.patience:
                sys.exit(0)  # ok: MLS307
    return state
