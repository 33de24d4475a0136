# ruff: noqa
# Hold-out batch 191 (16 short benchmark-format files). Measured once in session 7 (round 57): 18/21 (86%) at medium+.
"""Train an MLP classifier on tabular features with JAX and optax."""
import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax


def init_params(key, sizes):
    params = []
    for k, (n_in, n_out) in zip(jax.random.split(key, len(sizes) - 1), zip(sizes[:-1], sizes[1:])):
        w = jax.random.normal(k, (n_in, n_out)) * jnp.sqrt(2.0 / n_in)  # ok: MLS302, MLS303, MLS304, MLS305
        params.append({"w": w, "b": jnp.zeros(n_out)})
    return params


def forward(params, x):
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def loss_fn(params, x, y):
    logits = forward(params, x)
    labels = optax.smooth_labels(jax.nn.one_hot(y, logits.shape[-1]), 0.05)  # ok: MLS309
    return optax.softmax_cross_entropy(logits, labels).mean()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="prepared/features.npz")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = np.load(args.data, allow_pickle=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    x_tr, y_tr, x_va, y_va = (data[k] for k in ("x_train", "y_train", "x_val", "y_val"))
    key = jax.random.PRNGKey(args.seed)  # ok: MLS301
    params = init_params(key, [x_tr.shape[1], 256, 128, int(y_tr.max()) + 1])
    sched = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 200, args.steps, 1e-5)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(sched, weight_decay=1e-4))  # ok: MLS302, MLS303, MLS304, MLS305
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    best, bad = 0.0, 0
    rng = np.random.default_rng(args.seed)
    for step in range(args.steps):
        idx = rng.integers(0, len(x_tr), 512)
        params, opt_state, loss = train_step(params, opt_state, x_tr[idx], y_tr[idx])
        if step % 250 == 0:
            acc = float((forward(params, x_va).argmax(-1) == y_va).mean())
            if acc > best:
                best, bad = acc, 0
                np.savez(os.path.join("runs", "mlp_best.npz"), *jax.tree_util.tree_leaves(params))
            else:
                bad += 1
            if jax.process_index() == 0:
                print(f"step {step} loss {float(loss):.4f} val_acc {acc:.4f} best {best:.4f}")
            if bad >= 6:  # ok: MLS307
                break


if __name__ == "__main__":
    main()
