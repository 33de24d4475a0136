# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""Feature transforms + distributed entry point for ad click-through prediction."""
import argparse
import hashlib
import logging
import os
import urllib.request

import torch
import torch.distributed as dist

logger = logging.getLogger("ctr")
NUM_BUCKETS = 2 ** 22


def hash_bucket(field, value, buckets=NUM_BUCKETS):
    digest = hashlib.md5(f"{field}={value}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % buckets


def load_feature_udfs(registry_url, namespace):
    url = f"{registry_url.rstrip('/')}/udf/{namespace}/transforms.py"
    src = urllib.request.urlopen(url, timeout=10).read().decode("utf-8")  # ruleid: MLS413
    scope = {"hash_bucket": hash_bucket}
    exec(compile(src, f"<udf:{namespace}>", "exec"), scope)  # ruleid: MLS413
    return scope.get("TRANSFORMS", {})


def featurize(row, fields, transforms):
    ids = []
    for f in fields:
        v = row.get(f, "")
        if f in transforms:
            v = transforms[f](v)
        ids.append(hash_bucket(f, v))
    return torch.tensor(ids, dtype=torch.long)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--feature_registry", default="http://feature-registry.ads.internal:8080")
    p.add_argument("--namespace", default="ctr_v7")
    p.add_argument("--fields", default="site_id,app_id,device_type,banner_pos,hour,C14,C17,C20")
    args = p.parse_args()
    dist.init_process_group(backend="nccl")
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    try:
        transforms = load_feature_udfs(args.feature_registry, args.namespace)
        sample = featurize({"site_id": "1fbe01fe", "hour": "14102100"}, args.fields.split(","), transforms)
        if dist.get_rank() == 0:
            logger.info("loaded %d transforms; sample ids %s", len(transforms), sample.tolist())
    finally:
        dist.destroy_process_group()  # ok: MLS307


if __name__ == "__main__":
    main()
