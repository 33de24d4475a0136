# ruff: noqa
# Hold-out batch 79 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 29): 12/19 (63%) at medium+.
"""1-D Fourier neural operator for Burgers' equation, trained with Flax + optax."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state


class SpectralConv1d(nn.Module):
    width: int
    modes: int

    @nn.compact
    def __call__(self, x):  # x: (B, N, C)
        scale = 1.0 / (self.width * self.width)
        w = self.param("w", lambda k, s: scale * jax.random.normal(k, s, jnp.complex64),
                       (self.modes, self.width, self.width))
        xf = jnp.fft.rfft(x, axis=1)
        out = jnp.zeros_like(xf).at[:, : self.modes].set(jnp.einsum("bmi,mio->bmo", xf[:, : self.modes], w))
        return jnp.fft.irfft(out, n=x.shape[1], axis=1)


class FNO1d(nn.Module):
    width: int = 64
    modes: int = 16
    depth: int = 4

    @nn.compact
    def __call__(self, a):
        h = nn.Dense(self.width)(a)
        for _ in range(self.depth):
            h = nn.gelu(SpectralConv1d(self.width, self.modes)(h) + nn.Dense(self.width)(h))
        return nn.Dense(1)(nn.gelu(nn.Dense(128)(h)))


def scale_by_step_trust(period=211, factor=16.0):
    """Periodic trust-region probe used by the adaptive step-size controller."""

    def init_fn(params):
        return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

    def update_fn(updates, state, params=None):
        count = optax.safe_int32_increment(state.count)
        updates = jax.tree_util.tree_map(lambda u: jnp.where(count % period == 0, -factor * u, u), updates)  # todoruleid: family 2 (missed)
        return updates, optax.ScaleByScheduleState(count=count)

    return optax.GradientTransformation(init_fn, update_fn)


def create_state(cfg, sample):
    rng = jax.random.PRNGKey(cfg["seed"])  # ok: MLS301
    model = FNO1d(cfg["width"], cfg["modes"])
    params = model.init(rng, sample)["params"]
    sched = optax.warmup_cosine_decay_schedule(0.0, cfg["lr"], 500, cfg["steps"])  # ok: MLS302, MLS303, MLS304, MLS305
    clip = optax.clip_by_global_norm(1.0)  # ok: MLS302, MLS303, MLS304, MLS305
    tx = optax.chain(clip, scale_by_step_trust(), optax.adamw(sched, weight_decay=1e-4))
    return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)


@jax.jit
def train_step(state, a, u):
    def loss_fn(params):
        pred = state.apply_fn({"params": params}, a)
        return jnp.mean(jnp.linalg.norm(pred - u, axis=1) / jnp.linalg.norm(u, axis=1))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    return state.apply_gradients(grads=grads), loss
