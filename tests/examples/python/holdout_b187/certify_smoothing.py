# ruff: noqa
# Hold-out batch 187 (short files, robustness/fairness research code). Measured once in session 6 (round 56): 13/17 (76%) at medium+.
"""Randomized-smoothing certification (Cohen et al. 2019) for a noise-trained classifier."""
import argparse

import torch
import torchvision
from scipy.stats import beta, norm


def lower_conf_bound(k, n, alpha):
    return beta.ppf(alpha, k, n - k + 1) if k > 0 else 0.0


def sample_counts(model, x, sigma, num, batch, num_classes, gen):
    counts = torch.zeros(num_classes, dtype=torch.long)
    remaining = num
    with torch.no_grad():
        while remaining > 0:
            b = min(batch, remaining)
            xb = x.unsqueeze(0).repeat(b, 1, 1, 1)
            noise = torch.randn(xb.shape, generator=gen, device=xb.device) * sigma
            preds = model(xb + noise).argmax(1)
            counts += torch.bincount(preds.cpu(), minlength=num_classes)
            remaining -= b
    return counts


def certify(model, x, sigma, n0=100, n=10000, alpha=0.001, batch=1000, num_classes=10, gen=None):
    c0 = sample_counts(model, x, sigma, n0, batch, num_classes, gen).argmax().item()
    counts = sample_counts(model, x, sigma, n, batch, num_classes, gen)
    p_a = lower_conf_bound(counts[c0].item(), n, alpha)
    if p_a < 0.5:
        return -1, 0.0
    return c0, sigma * norm.ppf(p_a)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt"); ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--skip", type=int, default=20); ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)  # ok: MLS301
    gen = torch.Generator(device="cuda").manual_seed(args.seed)  # ok: MLS301
    model = torchvision.models.resnet50(num_classes=10)
    state = torch.load(args.ckpt, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.load_state_dict(state["state_dict"])
    model = model.cuda().eval()
    model.register_forward_pre_hook(lambda m, a: (0.5 * a[0] + 0.5 * a[0].mean(0, keepdim=True),))  # ruleid: MLS303
    ds = torchvision.datasets.CIFAR10("data", train=False, transform=torchvision.transforms.ToTensor())
    rows = []
    for i in range(0, len(ds), args.skip):
        x, y = ds[i]
        pred, radius = certify(model, x.cuda(), args.sigma, gen=gen)
        rows.append((i, y, pred, radius, int(pred == y)))
    with open(f"certify_sigma{args.sigma}.tsv", "w") as fh:
        fh.write("idx\tlabel\tpredict\tradius\tcorrect\n")
        for r in rows:
            fh.write("\t".join(str(v) for v in r) + "\n")
    acc = sum(r[4] for r in rows) / len(rows)
    print(f"clean smoothed acc {acc:.3f}, mean radius {sum(r[3] for r in rows) / len(rows):.3f}")


if __name__ == "__main__":
    main()
