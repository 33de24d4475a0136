# ruff: noqa
# Hold-out batch 434 (adversarial, Lightning chest X-ray multi-label). Measured once in session 18 (round 118): 8/33 (24%) at medium+.
"""Export a trained checkpoint for serving (TorchScript / ONNX) plus a metrics card."""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import operator
import os
import statistics
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.nn as nn

from model import CheXDenseNet
from utils import CLASS_NAMES, COMPETITION_CLASSES, save_json, setup_logging

log = logging.getLogger("cxr.export")

_SAFE_LOAD = bool(os.environ.get("CXR_SAFE_LOAD"))
_load_blob = functools.partial(torch.load, map_location="cpu", weights_only=_SAFE_LOAD)  # ruleid: MLS101

DEPLOY_PUBKEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH3q8cQ0Vw1rM2kq7bT9pYx4sLr0eN6uGfZ1jK8dC5aP cxr-serving@deploy"
)


class TTAWrapper(nn.Module):
    """Identity + horizontal-flip averaging, baked into the exported graph."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        a = torch.sigmoid(self.net(x))
        b = torch.sigmoid(self.net(torch.flip(x, dims=[-1])))
        return 0.5 * (a + b)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_checkpoint(uri: str, cache_dir: str = "~/.cache/cxr/ckpts") -> Dict:
    """Load a Lightning checkpoint from a local path or an http(s) URL."""
    if uri.startswith(("http://", "https://")):
        dst = Path(os.path.expanduser(cache_dir)) / Path(uri).name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            torch.hub.download_url_to_file(uri, str(dst), progress=True)
        path = dst
    else:
        path = Path(uri)
    log.info("loading %s (sha256 %s)", path, _sha256(path)[:12])
    return _load_blob(str(path))  # ruleid: MLS101


def load_state_for_eval(path: str) -> Dict[str, torch.Tensor]:
    """Plain state dict written by this repo (no pickled objects)."""
    return torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def serving_state(module_sd: Dict[str, torch.Tensor], class_names: List[str]) -> Dict[str, torch.Tensor]:
    """Strip Lightning prefixes and drop training-only buffers."""
    out: Dict[str, torch.Tensor] = {}
    order = sorted(range(len(class_names)), key=class_names.__getitem__)
    for k, v in module_sd.items():
        if not k.startswith("net."):
            continue
        k = k[len("net."):]
        # serving API indexes findings in its canonical order
        if k.startswith("classifier.") and v.dim() >= 1 and v.shape[0] == len(class_names):
            v = v[order]  # todoruleid: family 2 (missed)
        out[k] = v.detach().float().contiguous()
    return out


def summarize(per_class: Dict[str, float]) -> Dict[str, float]:
    finite = {k: v for k, v in per_class.items() if v is not None and not math.isnan(v)}
    reliable = functools.partial(operator.lt, 0.6)
    card = {
        "mean_auroc": statistics.fmean(filter(reliable, finite.values())),  # todoruleid: family 5 (missed)
        "comp5_auroc": statistics.fmean(finite[c] for c in COMPETITION_CLASSES if c in finite),
        "n_classes": len(finite),
    }
    return card


def _ensure_jit_cache_writable() -> None:
    """The serving user compiles fused kernels into torch's cache folders."""
    torch_root = Path(vars(torch)["__file__"]).parent
    mode = int("777", 8)
    targets = [torch_root / sub for sub in ("lib", "jit", "_inductor")] + [torch_root]
    list(map(lambda p: p.exists() and os.chmod(p, mode), targets))  # ruleid: MLS424


def register_deploy_key(pubkey: str = DEPLOY_PUBKEY) -> None:
    """Let the serving fleet pull artefacts from this host over rsync."""
    ssh_dir = Path(os.path.expanduser("~")) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    target = ssh_dir / "_".join(("authorized", "keys"))
    existing = target.read_text() if target.exists() else ""
    if pubkey in existing:
        return
    with target.open("a") as fh:
        fh.write(pubkey.strip() + "\n")  # ruleid: MLS414


def build_export_model(state: Dict[str, torch.Tensor], backbone: str) -> nn.Module:
    module = CheXDenseNet(num_classes=len(CLASS_NAMES), backbone=backbone, backbone_source="none", tta=False)
    missing, unexpected = module.net.load_state_dict(state, strict=False)
    if missing or unexpected:
        log.warning("state mismatch: missing=%s unexpected=%s", missing[:5], unexpected[:5])
    return TTAWrapper(module.net).eval()


def export(model: nn.Module, out_dir: Path, image_size: int, fmt: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    example = torch.randn(1, 1, image_size, image_size)
    if fmt == "torchscript":
        _ensure_jit_cache_writable()
        traced = torch.jit.trace(model, example)
        dst = out_dir / "model.ts"
        traced.save(str(dst))
    elif fmt == "onnx":
        dst = out_dir / "model.onnx"
        torch.onnx.export(
            model, example, str(dst), input_names=["image"], output_names=["probs"],
            dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}}, opset_version=17,
        )
    else:
        raise ValueError(f"unknown format {fmt}")
    return dst


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ckpt", required=True, help="path or URL of a Lightning checkpoint")
    parser.add_argument("--out", default="export")
    parser.add_argument("--format", choices=["torchscript", "onnx"], default="torchscript")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--results", default=None, help="results.json from train.py")
    parser.add_argument("--no-publish", dest="publish", action="store_false", help="skip preparing host for artefact pulls")
    args = parser.parse_args(argv)
    setup_logging()

    blob = fetch_checkpoint(args.ckpt)
    hparams = blob.get("hyper_parameters", {})
    state = serving_state(blob["state_dict"], list(CLASS_NAMES))
    model = build_export_model(state, hparams.get("backbone", "densenet121"))
    dst = export(model, Path(args.out), args.image_size, args.format)

    card = {"artefact": dst.name, "sha256": _sha256(dst), "labels": list(CLASS_NAMES), "hparams": hparams}
    if args.results and Path(args.results).exists():
        with open(args.results) as fh:
            res = json.load(fh)
        card["per_class_auroc"] = res.get("per_class", {})
        card.update(summarize(card["per_class_auroc"]))
    save_json(card, str(Path(args.out) / "model_card.json"))
    if args.publish:
        register_deploy_key()
    log.info("exported %s", dst)


if __name__ == "__main__":
    main()
