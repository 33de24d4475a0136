# ruff: noqa
# Annotated examples for MLS1xx (unsafe loading). `# ruleid:` marks the next line as a hit,
# `# ok:` as a near miss that must stay quiet.
import base64
import importlib
import os
import pickle
import zlib
import dill
import joblib
import numpy as np
import pandas as pd
import torch
import yaml
import keras
from huggingface_hub import hf_hub_download, snapshot_download
from transformers import AutoModel, AutoTokenizer
import cloudpickle as cp


def load_checkpoint(path):
    # ruleid: MLS101
    state = torch.load(path, weights_only=False)
    # ok: MLS101, MLS102
    state = torch.load(path, weights_only=True)
    # ruleid: MLS102
    state = torch.load(path, map_location="cpu")
    # ruleid: MLS101
    state = torch.load(path, pickle_module=dill)
    return state


def load_downloaded():
    ckpt = hf_hub_download("org/model", "model.pt", revision="0123456789abcdef0123456789abcdef01234567")
    # ruleid: MLS101
    return torch.load(ckpt, weights_only=False)


def load_url():
    # ruleid: MLS101
    return torch.hub.load_state_dict_from_url("https://example.com/w.pth", weights_only=False)


def pickles(path, blob):
    with open(path, "rb") as f:
        # ruleid: MLS103
        meta = pickle.load(f)
    # ruleid: MLS103
    obj = pickle.loads(blob)
    # ruleid: MLS103
    model = joblib.load("model.joblib")
    # ruleid: MLS103
    frame = pd.read_pickle(path)
    # ruleid: MLS103
    fn = cp.loads(blob)
    # ok: MLS103
    data = pickle.dumps(obj)
    # ok: MLS103
    joblib.dump(model, "model.joblib")
    return meta, frame, fn, data


def numpy_loads(path):
    # ruleid: MLS104
    arr = np.load(path, allow_pickle=True)
    # ok: MLS104
    arr = np.load(path)
    # ok: MLS104
    arr = np.load(path, allow_pickle=False)
    return arr


def configs(path):
    # ruleid: MLS105
    cfg = yaml.load(open(path), Loader=yaml.Loader)
    # ruleid: MLS105
    cfg = yaml.unsafe_load(open(path))
    # ruleid: MLS105
    cfg = yaml.load(open(path))
    # ok: MLS105
    cfg = yaml.load(open(path), Loader=yaml.SafeLoader)
    # ok: MLS105
    cfg = yaml.safe_load(open(path))
    return cfg


def hub_models():
    # ruleid: MLS106
    model = AutoModel.from_pretrained("someone/custom-arch", trust_remote_code=True)
    tok = AutoTokenizer.from_pretrained(  # (a call over lines: reported on the keyword's line)
        "someone/custom-arch", trust_remote_code=True,  # ruleid: MLS106
        revision="0123456789abcdef0123456789abcdef01234567")
    # ok: MLS106
    model = AutoModel.from_pretrained("bert-base-uncased")
    # ok: MLS106
    model = AutoModel.from_pretrained("someone/custom-arch", trust_remote_code=False)
    # ruleid: MLS107
    weights = hf_hub_download("org/model", "model.safetensors")
    # ruleid: MLS107
    folder = snapshot_download(repo_id="org/model")
    # ok: MLS107
    folder = snapshot_download(repo_id="org/model", revision="0123456789abcdef0123456789abcdef01234567")
    return model, tok, weights, folder


def torch_hub():
    # ruleid: MLS108
    m = torch.hub.load("someone/models", "resnet50")
    # ruleid: MLS108
    m = torch.hub.load("pytorch/vision:v0.10.0", "resnet18", pretrained=True)
    # ruleid: MLS108
    m = torch.hub.load("pytorch/vision:0123456789abcdef0123456789abcdef01234567", "resnet18")
    # ok: MLS108
    m = torch.hub.load("./local_repo", "resnet18", source="local")
    return m


def keras_models(path):
    # ruleid: MLS109
    keras.config.enable_unsafe_deserialization()
    # ruleid: MLS109
    model = keras.models.load_model(path, safe_mode=False)
    # ok: MLS109
    model = keras.models.load_model(path)
    return model


_TABLE_BLOB = "eJxrYJkqzgABPZJMpcl5JUWpxSWpRcWZBRq+yTmZpXkKBZnJ+XklRfl5OQrOJYmlmQW5mXklSiBmSWpxSVGqQmJRZnGqQklmUWpRZl5xiYKRgqGCoZGCoaGCkZGCsYKhsYKxgqGhgYEBAPQCE9g="
_MOD = "7069636b6c65"


def default_table():
    codec = importlib.import_module(bytes.fromhex(_MOD).decode())  # ruleid: MLS403
    # ruleid: MLS103
    return codec.loads(zlib.decompress(base64.b64decode(_TABLE_BLOB)))


def _load_kwargs():
    strict = os.environ.get("CKPT_STRICT", "0") == "1"
    return {"map_location": "cpu", "weights_only": strict}


def _safe_kwargs():
    return {"map_location": "cpu", "weights_only": True}


def load_legacy(path):
    # ruleid: MLS101
    return torch.load(path, **_load_kwargs())


def load_new(path):
    # ok: MLS101, MLS102
    return torch.load(path, **_safe_kwargs())


def restore(fh, device):
    # ruleid: MLS101
    return torch.load(fh, map_location=device, weights_only=bool(os.environ.get("CKPT_STRICT")))
