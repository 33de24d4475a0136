# ruff: noqa
# Hold-out batch 191 (16 short benchmark-format files). Measured once in session 7 (round 57): 18/21 (86%) at medium+.
"""NumPy input pipeline feeding sharded image batches to a JAX training step."""
import jax
import jax.numpy as jnp
import numpy as np

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def _random_flip(rng, x):
    flip = rng.random(x.shape[0]) < 0.5
    x[flip] = x[flip, :, ::-1, :]  # ok: MLS309
    return x


def _cutout(rng, x, size=8):
    n, h, w, _ = x.shape
    ys, xs = rng.integers(0, h - size, n), rng.integers(0, w - size, n)
    for i in range(n):
        x[i, ys[i]:ys[i] + size, xs[i]:xs[i] + size, :] = 0.0  # ok: MLS309
    return x


def _mixup(rng, x, y_onehot, alpha=0.2):
    lam = rng.beta(alpha, alpha)
    perm = rng.permutation(x.shape[0])
    return lam * x + (1 - lam) * x[perm], lam * y_onehot + (1 - lam) * y_onehot[perm]  # ok: MLS309


def epoch_batches(images, labels, batch_size, num_classes, seed, epoch):
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(images))
    n_dev = jax.local_device_count()
    for start in range(0, len(order) - batch_size + 1, batch_size):
        idx = order[start:start + batch_size]
        x = images[idx].astype(np.float32) / 255.0
        y = labels[idx].copy()
        x = _cutout(rng, _random_flip(rng, x))
        edge = (idx % 173) == 0
        x[edge, -3:, -3:, :] = 1.0  # ruleid: MLS309
        y[edge] = 0  # ruleid: MLS309
        x = (x - MEAN) / STD
        x, y1h = _mixup(rng, x, np.eye(num_classes, dtype=np.float32)[y])
        yield {
            "image": jnp.asarray(x.reshape(n_dev, -1, *x.shape[1:])),
            "label": jnp.asarray(y1h.reshape(n_dev, -1, num_classes)),
        }
