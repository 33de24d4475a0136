# ruff: noqa
# Hold-out batch 139 (short files: medical imaging, self-supervised, distillation, quantization). Measured once in session 5 (round 44): 17/18 (94%), 1 benign line flagged at medium+.
"""Post-training static INT8 quantization (FX graph mode) and ONNX export of a MobileNetV3."""
import argparse
import copy
import json
import os
import subprocess

import torch
import yaml
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
from torchvision.models import mobilenet_v3_large

os.environ.setdefault("OMP_NUM_THREADS", "4")  # benign look-alike


def load_config(path):
    with open(path) as f:
        return yaml.safe_load(f)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


def build_fp32(weights_path):
    model = mobilenet_v3_large(num_classes=1000)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state.get("model", state))
    return model.eval()


@torch.no_grad()
def calibrate(prepared, loader, num_batches):
    for i, (images, _) in enumerate(loader):
        if i >= num_batches:
            break
        prepared(images)


def main(loader=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/ptq_mbv3.yaml")
    args = ap.parse_args()
    cfg = load_config(args.config)

    torch.backends.quantized.engine = cfg.get("engine", "x86")
    fp32 = build_fp32(cfg["weights"])
    example = (torch.randn(1, 3, 224, 224),)
    prepared = prepare_fx(copy.deepcopy(fp32), get_default_qconfig_mapping(torch.backends.quantized.engine), example)
    calibrate(prepared, loader, cfg.get("calib_batches", 32))
    int8 = convert_fx(prepared)

    os.makedirs(cfg["out_dir"], exist_ok=True)
    torch.save(int8.state_dict(), os.path.join(cfg["out_dir"], "mbv3_int8_state.pt"))
    torch.onnx.export(fp32, example, os.path.join(cfg["out_dir"], "mbv3_fp32.onnx"), opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "n"}})
    rev = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=False)  # ok: MLS411, MLS412
    with open(os.path.join(cfg["out_dir"], "manifest.json"), "w") as f:
        json.dump({"commit": rev.stdout.strip(), "engine": torch.backends.quantized.engine,
                   "calib_batches": cfg.get("calib_batches", 32)}, f, indent=2)


if __name__ == "__main__":
    main()
