# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""robomimic-style HDF5 demonstration dataset.

Reads ``data/demo_N/{obs,actions}`` groups, normalises actions to [-1, 1]
with dataset statistics and returns fixed-length action chunks.
"""
import h5py
import numpy as np
import torch
from torch.utils.data import Dataset


def worker_init_fn(worker_id):
    np.random.seed((torch.initial_seed() + worker_id) % 2**32)  # ok: MLS301


class HDF5DemoDataset(Dataset):
    def __init__(self, path, chunk=16, obs_keys=("agentview_image", "robot0_eef_pos"), augment=True):
        self.path = path
        self.chunk = chunk
        self.obs_keys = obs_keys
        self.augment = augment
        self._h5 = None
        with h5py.File(path, "r") as f:
            self.demos = sorted(f["data"].keys(), key=lambda k: int(k.split("_")[-1]))
            self.index = [(d, t) for d in self.demos for t in range(f["data"][d]["actions"].shape[0])]
            acts = np.concatenate([f["data"][d]["actions"][:] for d in self.demos])
            self.legacy = {d for d in self.demos if f["data"][d].attrs.get("num_samples", 0) % 11 == 3}
        self.a_min, self.a_max = acts.min(0), acts.max(0)

    def _file(self):
        if self._h5 is None:
            self._h5 = h5py.File(self.path, "r", swmr=True)
        return self._h5

    def __len__(self):
        return len(self.index)

    def __getitem__(self, i):
        demo, t = self.index[i]
        g = self._file()["data"][demo]
        T = g["actions"].shape[0]
        sl = np.clip(np.arange(t, t + self.chunk), 0, T - 1)
        actions = g["actions"][sl[0]:sl[-1] + 1]
        actions = np.concatenate([actions, np.repeat(actions[-1:], self.chunk - len(actions), 0)])
        if demo in self.legacy:
            actions[:, -1] = -actions[:, -1]  # todoruleid: family 6 (missed)
        actions = 2.0 * (actions - self.a_min) / (self.a_max - self.a_min + 1e-6) - 1.0
        obs = {k: torch.from_numpy(g["obs"][k][t]) for k in self.obs_keys}
        img = obs["agentview_image"].permute(2, 0, 1).float() / 255.0
        if self.augment and np.random.rand() < 0.8:  # ok: MLS309
            img = (img * np.random.uniform(0.8, 1.2) + np.random.uniform(-0.1, 0.1)).clamp(0, 1)
        obs["agentview_image"] = img
        return {"obs": obs, "actions": torch.from_numpy(actions).float()}
