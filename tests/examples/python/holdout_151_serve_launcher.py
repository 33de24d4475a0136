# ruff: noqa
# Hold-out batch 151 (short files: protein LMs, single-cell, weather, LLM serving). Measured once in session 5 (round 47): 15/17 (88%) at medium+.
"""Launcher for multi-replica LLM inference servers with health checks and graceful shutdown."""
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request

import yaml

log = logging.getLogger("launcher")
_procs = []


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, timeout=5).strip()  # ok: MLS411, MLS412
    except (subprocess.SubprocessError, OSError):
        return "nogit"


def wait_healthy(port, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:  # ok: MLS411, MLS412
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(5)  # ok: MLS307
    return False


def _shutdown(signum, frame):
    log.info("signal %s: stopping %d replicas", signum, len(_procs))
    for p in _procs:
        p.terminate()
    for p in _procs:
        p.wait(timeout=30)
    sys.exit(0)  # ok: MLS307


def main(cfg_path):
    with open(cfg_path) as f:
        cfg = yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING)  # ok: MLS308
    signal.signal(signal.SIGTERM, _shutdown)
    signal.signal(signal.SIGINT, _shutdown)
    commit = git_commit()
    for i, rep in enumerate(cfg["replicas"]):
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, rep["gpus"]))  # benign look-alike
        env["TOKENIZERS_PARALLELISM"] = "false"
        cmd = [sys.executable, "-m", "serving.api", "--model", cfg["model"], "--revision", cfg["revision"],
               "--port", str(rep["port"]), "--tp", str(len(rep["gpus"])), "--build", commit]
        _procs.append(subprocess.Popen(cmd, env=env))
        if not wait_healthy(rep["port"]):
            log.error("replica %d failed health check", i)
            _shutdown(signal.SIGTERM, None)
    log.info("all %d replicas healthy (commit %s)", len(_procs), commit)
    while all(p.poll() is None for p in _procs):
        time.sleep(10)
    _shutdown(signal.SIGTERM, None)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "configs/serve.yaml")
