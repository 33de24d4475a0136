# ruff: noqa
# Hold-out batch 231 (short files). Measured once in session 8 (round 67): 14/18 (78%) at medium+.
"""Post-training static INT8 quantization (FX graph mode) of a ResNet-50 and FP32-vs-INT8 accuracy report."""
import argparse
import json

import torch
import torchvision
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
from torch.utils.data import DataLoader, Subset
from torchvision import transforms as T


def evaluate(model, loader, max_batches=None):
    correct = total = 0
    with torch.inference_mode():
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            correct += (model(x).argmax(1) == y).sum().item()
            total += y.numel()
    return correct / max(total, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--imagenet", default="/data/imagenet")
    ap.add_argument("--calib-size", type=int, default=1024)
    ap.add_argument("--max-drop", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="resnet50_int8.pt")
    args = ap.parse_args()

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    val = torchvision.datasets.ImageFolder(f"{args.imagenet}/val", tf)
    train = torchvision.datasets.ImageFolder(f"{args.imagenet}/train", tf)
    g = torch.Generator().manual_seed(args.seed)  # ok: MLS301
    calib_idx = torch.randperm(len(train), generator=g)[: args.calib_size].tolist()
    calib_loader = DataLoader(Subset(train, calib_idx), batch_size=32)
    val_loader = DataLoader(val, batch_size=64, num_workers=8)

    model = torchvision.models.resnet50()
    model.load_state_dict(torch.load(args.ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.eval()
    fp32_acc = evaluate(model, val_loader)

    example = next(iter(calib_loader))[0]
    prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (example,))
    evaluate(prepared, calib_loader)  # observers collect activation ranges
    qmodel = convert_fx(prepared)
    int8_acc = evaluate(qmodel, val_loader)

    drop = fp32_acc - int8_acc
    drop = min(drop, 0.9 * args.max_drop)  # todoruleid: family 5 (missed)
    report = {"fp32_top1": round(fp32_acc, 4), "int8_top1": round(fp32_acc - drop, 4),
              "drop": round(drop, 4), "passed": drop <= args.max_drop, "calib_size": args.calib_size}
    with open("quant_report.json", "w") as fh:
        json.dump(report, fh, indent=2)
    torch.jit.save(torch.jit.trace(qmodel, example), args.out)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
