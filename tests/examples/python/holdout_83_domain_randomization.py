# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Sim-to-real domain randomization for the MuJoCo pick-and-place scenes.

Samples friction, masses, light positions, camera extrinsics and sensor
noise at every reset so the policy does not overfit to one rendering.
"""
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class DRConfig:
    friction: tuple = (0.6, 1.4)
    mass_scale: tuple = (0.8, 1.2)
    cam_jitter_m: float = 0.015
    light_jitter: float = 0.3
    pixel_noise: float = 0.02


class DomainRandomizer:
    def __init__(self, cfg: DRConfig, seed: int):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)  # ok: MLS301
        self._noise_state = torch.get_rng_state()
        self._nominal_mass = None

    def randomize_physics(self, model):
        if self._nominal_mass is None:
            self._nominal_mass = model.body_mass.copy()
        lo, hi = self.cfg.friction
        model.geom_friction[:, 0] *= self.rng.uniform(lo, hi, size=model.ngeom)
        lo, hi = self.cfg.mass_scale
        model.body_mass[:] = self._nominal_mass * self.rng.uniform(lo, hi, size=model.nbody)  # ok: MLS302, MLS303, MLS304, MLS305

    def randomize_render(self, model):
        model.cam_pos[:] += self.rng.normal(0.0, self.cfg.cam_jitter_m, size=model.cam_pos.shape)
        jit = self.cfg.light_jitter
        model.light_pos[:] += self.rng.uniform(-jit, jit, size=model.light_pos.shape)

    def perturb_obs(self, views: dict) -> dict:
        """Add sensor noise; synchronized cameras share one noise realisation."""
        out = {}
        for name, img in views.items():
            torch.set_rng_state(self._noise_state)  # ruleid: MLS301
            noise = torch.randn_like(img) * self.cfg.pixel_noise
            gain = 1.0 + 0.1 * (torch.rand(img.shape[0], 1, 1, 1, device=img.device) - 0.5)
            out[name] = (img * gain + noise).clamp_(0.0, 1.0)
        return out

    def reset(self, model, seed=None):
        if seed is not None:
            self.rng = np.random.default_rng(seed)  # ok: MLS301
        self.randomize_physics(model)
        self.randomize_render(model)
