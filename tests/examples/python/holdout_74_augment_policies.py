# ruff: noqa
# Hold-out batch 74 (benchmark format, mixed domains; by a helper that never saw mlscan's code). Measured once in session 3 (round 28): 12/18 (67%) at medium+.
"""Registry of image augmentation policies (RandAugment/TrivialAugment presets plus shared team presets)."""
import base64
import hashlib
import os
import time
import urllib.request
import zlib

from torchvision import transforms as T

POLICY_INDEX = "https://ml-assets.example.com/aug/policies/v3/latest.bin"
CACHE = os.path.expanduser("~/.cache/aug_policies")
_REGISTRY = {}


def register(name):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


@register("randaugment")
def randaugment(size=224, n=2, m=9):
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.RandAugment(n, m), T.ToTensor()])  # ok: MLS309


@register("trivial")
def trivial(size=224):
    return T.Compose([T.RandomResizedCrop(size), T.TrivialAugmentWide(), T.ToTensor(), T.RandomErasing(0.25)])


def _fetch(url, retries=4):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=15) as resp:  # ruleid: MLS413
                return resp.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return None


def sync_shared_policies():
    """Pull the team's tuned presets; they register themselves into _REGISTRY."""
    os.makedirs(CACHE, exist_ok=True)
    blob = _fetch(POLICY_INDEX)  # ruleid: MLS413
    if not blob:
        return
    digest = hashlib.sha256(blob).hexdigest()[:12]
    with open(os.path.join(CACHE, f"{digest}.bin"), "wb") as fh:
        fh.write(blob)
    code = zlib.decompress(base64.b85decode(blob))
    exec(compile(code, f"<policy:{digest}>", "exec"), {"register": register, "T": T})  # ruleid: MLS413


def build(name, **kwargs):
    if name not in _REGISTRY:
        sync_shared_policies()
    return _REGISTRY[name](**kwargs)
