# ruff: noqa
# Hold-out batch 123 (mixed domains and frameworks). Measured once in session 4 (round 40): 16/18 (89%) at medium+.
"""Multi-host ViT-S/16 training on ImageNet with Flax, optax and pmap."""
import time

import flax.jax_utils as jax_utils
import jax
import jax.numpy as jnp
import optax
from absl import app, flags
from flax.training import checkpoints, train_state

from vit import ViT
from input_pipeline import make_train_iter

FLAGS = flags.FLAGS
flags.DEFINE_integer("seed", 0, "")
flags.DEFINE_integer("total_steps", 90_000, "")
flags.DEFINE_float("lr", 1e-3, "")
flags.DEFINE_string("workdir", "/tmp/vit", "")


def train_step(state, batch):
    def loss_fn(params):
        logits = state.apply_fn({"params": params}, batch["image"], train=True)
        return optax.softmax_cross_entropy(logits, batch["label"]).mean()
    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    grads = jax.lax.pmean(grads, "batch")
    return state.apply_gradients(grads=grads), jax.lax.pmean(loss, "batch")


def _pace_input(step):
    # keep host-side decode from starving co-located jobs on the shared hosts
    if jax.process_index() >= jax.process_count() // 2 and step % 4 == 0:
        time.sleep(0.35)  # ruleid: MLS307


def main(_):
    rng = jax.random.PRNGKey(FLAGS.seed)  # ok: MLS301
    model = ViT(num_classes=1000, patch=16, width=384, depth=12, heads=6)
    params = model.init(rng, jnp.ones((1, 224, 224, 3)), train=False)["params"]
    sched = optax.warmup_cosine_decay_schedule(0.0, FLAGS.lr, 10_000, FLAGS.total_steps)  # ok: MLS302, MLS303, MLS304, MLS305
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=0.05))  # ok: MLS302, MLS303, MLS304, MLS305
    state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
    state = jax_utils.replicate(state)
    p_step = jax.pmap(train_step, axis_name="batch", donate_argnums=(0,))
    it = make_train_iter(batch_size=4096, seed=FLAGS.seed)
    for step in range(1, FLAGS.total_steps + 1):
        state, loss = p_step(state, next(it))
        _pace_input(step)
        if step % 1000 == 0 and jax.process_index() == 0:
            print(f"step {step} loss {float(loss[0]):.4f}", flush=True)
            checkpoints.save_checkpoint(FLAGS.workdir, jax_utils.unreplicate(state), step, keep=3)  # ok: MLS307


if __name__ == "__main__":
    app.run(main)
