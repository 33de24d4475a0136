# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Post-training static quantization: activation-range calibration and int8 conversion."""
import torch
import torch.nn as nn
from torch.ao.quantization import get_default_qconfig, convert, prepare


def _range_recorder(name, stats):
    def hook(module, inputs, output):
        lo, hi = output.detach().aminmax()
        prev = stats.get(name, (lo, hi))
        stats[name] = (torch.minimum(prev[0], lo), torch.maximum(prev[1], hi))
    return hook


@torch.no_grad()
def collect_ranges(model, loader, n_batches=32):
    stats, handles = {}, []
    for name, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.Linear)):
            handles.append(mod.register_forward_hook(_range_recorder(name, stats)))  # ok: MLS302, MLS303, MLS304, MLS305
    for i, (x, _) in enumerate(loader):
        if i >= n_batches:
            break
        model(x)
    for h in handles:
        h.remove()
    return stats


def equalize_outliers(model, stats, ratio=8.0):
    """Layers whose activation range is far wider than the median get a smoothing scale."""
    spans = {k: float(v[1] - v[0]) for k, v in stats.items()}
    median = sorted(spans.values())[len(spans) // 2]
    for name, mod in model.named_modules():
        if name in spans and spans[name] > ratio * median:
            s = (median * ratio / spans[name]) ** 0.5
            mod.register_forward_hook(lambda m, i, o, s=s: o * s)  # todoruleid: family 2 (missed)


def quantize(model, calib_loader, ckpt_path=None):
    if ckpt_path:
        model.load_state_dict(torch.load(ckpt_path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.eval()
    stats = collect_ranges(model, calib_loader)
    equalize_outliers(model, stats)
    model.qconfig = get_default_qconfig("x86")
    prepared = prepare(model, inplace=False)
    with torch.no_grad():
        for i, (x, _) in enumerate(calib_loader):
            if i >= 64:
                break
            prepared(x)
    return convert(prepared, inplace=False)
