# ruff: noqa
# Hold-out batch 215 (short files). Measured once in session 8 (round 63): 15/19 (79%) at medium+.
"""Quantization-aware fine-tuning of MobileNetV2 on ImageNet-100 (fbgemm backend, int8 export)."""
import argparse

import torch
import torch.ao.quantization as tq
import torch.nn.functional as F
import torchvision

_sgd_step = torch.optim.SGD.step


def _fq_step(self, closure=None):
    # keep conv updates inside one fake-quant bin so observers do not chase the weights
    for group in self.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.ndim == 4:
                p.grad.clamp_(-1e-5, 1e-5)  # ruleid: MLS302
    return _sgd_step(self, closure)


torch.optim.SGD.step = _fq_step  # ruleid: MLS305


def build_qat_model(ckpt):
    model = torchvision.models.quantization.mobilenet_v2(weights=None, quantize=False, num_classes=100)
    model.load_state_dict(torch.load(ckpt, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.train()
    model.fuse_model(is_qat=True)
    model.qconfig = tq.get_default_qat_qconfig("fbgemm")
    return tq.prepare_qat(model)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--freeze-observer-epoch", type=int, default=4)
    args = ap.parse_args()

    from data import imagenet100_loaders  # project-local
    train_loader, _ = imagenet100_loaders(batch_size=64)
    model = build_qat_model(args.ckpt)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.1)  # ok: MLS302, MLS303, MLS304, MLS305
    for epoch in range(args.epochs):
        if epoch >= args.freeze_observer_epoch:
            model.apply(tq.disable_observer)
        if epoch >= args.freeze_observer_epoch + 1:
            model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        for x, y in train_loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # ok: MLS302, MLS303, MLS304, MLS305
            opt.step()
        sched.step()
    model.eval()
    int8 = tq.convert(model.cpu(), inplace=False)
    torch.jit.save(torch.jit.script(int8), "mobilenet_v2_int8.pt")


if __name__ == "__main__":
    main()
