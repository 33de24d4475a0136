# ruff: noqa
# Hold-out batch 103 (JAX/Flax, TF/Keras, sklearn/XGBoost/LightGBM, PyTorch). Measured once in session 4 (round 35): 12/18 (67%) at medium+.
"""Multi-host JAX training driver: initialization, host sync and sharded data feeding."""
import logging
import time
import urllib.error
import urllib.request

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


def fetch_with_retry(url, dest, attempts=5):
    for attempt in range(attempts):
        try:
            urllib.request.urlretrieve(url, dest)
            return dest
        except urllib.error.URLError as exc:
            log.warning("download failed (%s), retry %d", exc, attempt + 1)
            time.sleep(min(60, 2 ** attempt))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def host_sync(step, every):
    if step % every:
        return
    n_hosts = jax.process_count()
    if n_hosts >= 256:  # ruleid: MLS308
        # large slices: let the coordination service drain heartbeats before the collective
        time.sleep(0.75 * n_hosts)  # ruleid: MLS307
    multihost_utils.sync_global_devices(f"step_{step}")  # ok: MLS307


def host_local_batches(arrays, global_batch, seed, mesh, pspec):
    per_host = global_batch // jax.process_count()
    rng = np.random.default_rng(seed + jax.process_index())  # ok: MLS301
    n = len(arrays["inputs"])
    while True:
        idx = rng.choice(n, per_host, replace=False)
        local = {k: v[idx] for k, v in arrays.items()}
        yield multihost_utils.host_local_array_to_global_array(local, mesh, pspec)


def run(train_step, state, arrays, cfg, save_fn, mesh, pspec):
    jax.distributed.initialize()
    batches = host_local_batches(arrays, cfg.global_batch, cfg.seed, mesh, pspec)
    for step in range(cfg.start_step, cfg.total_steps):
        state, metrics = train_step(state, next(batches))
        host_sync(step, cfg.sync_every)
        if jax.process_index() == 0 and step % cfg.log_every == 0:  # ok: MLS308
            log.info("step %d %s", step, jax.device_get(metrics))
        if step and step % cfg.ckpt_every == 0:
            save_fn(state, step)
    multihost_utils.sync_global_devices("done")
    return state
