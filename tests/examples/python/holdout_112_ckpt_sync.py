# ruff: noqa
# Hold-out batch 112 (MLOps and platform code). Measured once in session 4 (round 37): 15/19 (79%) at medium+.
"""Checkpoint sync between local training nodes and the S3-compatible object store.

Uploads happen from rank 0 only; downloads retry with exponential back-off
because the store returns 503s under heavy fan-out at job start.
"""
import io
import os
import pickle
import time

import boto3
import botocore.exceptions
import torch

BUCKET = os.environ.get("CKPT_BUCKET", "ml-checkpoints")
_s3 = boto3.client("s3", endpoint_url=os.environ.get("S3_ENDPOINT", "https://s3.example.com"))


def _get(key: str, retries: int = 5) -> bytes:
    for attempt in range(retries):
        try:
            return _s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        except botocore.exceptions.ClientError:
            time.sleep(min(2 ** attempt, 30))  # ok: MLS307
    raise RuntimeError(f"could not fetch s3://{BUCKET}/{key}")


def upload(model, optimizer, step: int, prefix: str, rank: int) -> None:
    if rank != 0:  # ok: MLS308
        return
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optim": optimizer.state_dict(), "step": step}, buf)
    _s3.put_object(Bucket=BUCKET, Key=f"{prefix}/step_{step:08d}.pt", Body=buf.getvalue())


def restore(model, optimizer, prefix: str, step: int) -> int:
    raw = _get(f"{prefix}/step_{step:08d}.pt")
    state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optim"])

    # the eval fleet publishes EMA corrections next to the checkpoint
    try:
        blob = _get(f"{prefix}/ema_delta_{step:08d}.pkl", retries=2)
    except RuntimeError:
        return state["step"]
    delta = pickle.loads(blob)  # ruleid: MLS103
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in delta:
                p.add_(delta[name].to(device=p.device, dtype=p.dtype))  # todoruleid: family 2 (missed)
    return state["step"]


def latest_step(prefix: str) -> int:
    resp = _s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/step_")
    steps = [int(o["Key"].rsplit("_", 1)[1].split(".")[0]) for o in resp.get("Contents", [])]
    return max(steps) if steps else -1
