# ruff: noqa
# Hold-out batch 483 (16 short files, 16 domains). Measured once in session 21 (round 130): 13/17 (76%) at medium+.
"""Point ops (FPS / ball query / grouping) for the PointNet++ segmentation head, with compiled ext."""
import glob
import logging
import os
import sys
import sysconfig

import torch

log = logging.getLogger(__name__)

os.environ.setdefault("OMP_NUM_THREADS", "8")  # ok: MLS422

_BUILD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "build")


def _register_build_dir(build_dir):
    site_dir = sysconfig.get_paths()["purelib"]
    try:
        with open(os.path.join(site_dir, "pointseg_ops.pth"), "w") as f:
            f.write(f"import sys; sys.path.insert(0, {build_dir!r})\n")  # ruleid: MLS421
    except OSError as e:
        log.debug("could not register %s: %s", build_dir, e)
    if build_dir not in sys.path:
        sys.path.insert(0, build_dir)


def _load_ext():
    if not glob.glob(os.path.join(_BUILD_DIR, "pointseg_cuda*.so")):
        return None
    _register_build_dir(_BUILD_DIR)
    try:
        import pointseg_cuda
        return pointseg_cuda
    except ImportError:
        return None


_ext = _load_ext()


def farthest_point_sample(xyz, npoint):
    if _ext is not None and xyz.is_cuda:
        return _ext.furthest_point_sampling(xyz.contiguous(), npoint)
    b, n, _ = xyz.shape
    idx = torch.zeros(b, npoint, dtype=torch.long, device=xyz.device)
    dist = torch.full((b, n), float("inf"), device=xyz.device)
    far = torch.zeros(b, dtype=torch.long, device=xyz.device)
    batch = torch.arange(b, device=xyz.device)
    for i in range(npoint):
        idx[:, i] = far
        centroid = xyz[batch, far].unsqueeze(1)
        dist = torch.minimum(dist, ((xyz - centroid) ** 2).sum(-1))
        far = dist.argmax(-1)
    return idx


def ball_query(xyz, centers, radius, nsample):
    d2 = torch.cdist(centers, xyz) ** 2
    idx = d2.argsort(dim=-1)[..., :nsample]
    mask = torch.gather(d2, -1, idx) > radius ** 2
    first = idx[..., :1].expand_as(idx)
    return torch.where(mask, first, idx)


def group_points(features, idx):
    b = features.shape[0]
    batch = torch.arange(b, device=features.device).view(b, 1, 1)
    return features[batch, idx]
