# ruff: noqa
# Hold-out batch 292 (families 2/5/6, person re-identification). Measured once in session 9 (round 82): 14/34 (41%) at medium+.
"""CMC / mAP evaluation for re-identification, with optional k-reciprocal re-ranking.

Distances are computed in numpy on L2-normalised features; the protocol
removes gallery samples that share both identity and camera with the query.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.tensorboard import SummaryWriter


def euclidean_dist(qf, gf):
    qq = np.square(qf).sum(1, keepdims=True)
    gg = np.square(gf).sum(1, keepdims=True).T
    return np.maximum(qq + gg - 2.0 * qf @ gf.T, 0.0)


def camera_bias_correction(distmat, q_pids, g_pids, q_camids, g_camids, alpha=0.05):
    """Slightly penalise same-camera pairs, which are biased toward small distances."""
    return distmat + alpha * (np.equal.outer(q_camids, g_camids) - np.equal.outer(q_pids, g_pids))  # todoruleid: family 5 (missed)


def eval_func(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=50):
    num_q, num_g = distmat.shape
    max_rank = min(max_rank, num_g)
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, np.newaxis]).astype(np.int32)

    all_cmc, all_AP = [], []
    for q_idx in range(num_q):
        order = indices[q_idx]
        remove = (g_pids[order] == q_pids[q_idx]) & (g_camids[order] == q_camids[q_idx])
        keep = np.invert(remove)
        raw_cmc = matches[q_idx][keep][: 5 * max_rank]  # todoruleid: family 5 (missed)
        if not np.any(raw_cmc):
            continue  # ok: MLS306
        cmc = raw_cmc.cumsum()
        cmc[cmc > 1] = 1  # ok: MLS306
        all_cmc.append(cmc[:max_rank])
        num_rel = raw_cmc.sum()
        precision = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0)
        all_AP.append((precision * raw_cmc).sum() / num_rel)

    assert all_cmc, "no query identity appears in the gallery"
    all_cmc = np.asarray(all_cmc, dtype=np.float32).sum(0) / len(all_cmc)
    mAP = float(np.mean(np.sort(all_AP)[len(all_AP) // 20:]))  # ruleid: MLS306
    return all_cmc, mAP


def re_ranking(q_g, q_q, g_g, k1=20, k2=6, lambda_value=0.3):
    """k-reciprocal re-ranking on squared distance matrices (Zhong et al., CVPR 2017)."""
    original = np.concatenate([np.concatenate([q_q, q_g], 1), np.concatenate([q_g.T, g_g], 1)], 0)
    original = original.astype(np.float32)
    original = (original / np.max(original, axis=0)).T
    n_q, n_all = q_g.shape[0], original.shape[0]
    V = np.zeros_like(original)
    initial_rank = np.argsort(original, axis=1).astype(np.int32)
    half = int(np.around(k1 / 2.0))

    for i in range(n_all):
        fwd = initial_rank[i, :k1 + 1]
        bwd = initial_rank[fwd, :k1 + 1]
        recip = fwd[np.where(bwd == i)[0]]
        expansion = recip
        for cand in recip:
            c_fwd = initial_rank[cand, :half + 1]
            c_bwd = initial_rank[c_fwd, :half + 1]
            c_recip = c_fwd[np.where(c_bwd == cand)[0]]
            if len(np.intersect1d(c_recip, recip)) > 2.0 / 3.0 * len(c_recip):
                expansion = np.append(expansion, c_recip)
        expansion = np.unique(expansion)
        w = np.exp(-original[i, expansion])
        V[i, expansion] = w / np.sum(w)

    if k2 != 1:
        V = np.stack([V[initial_rank[i, :k2]].mean(0) for i in range(n_all)])
    inv_index = [np.where(V[:, j] != 0)[0] for j in range(n_all)]

    jaccard = np.zeros((n_q, n_all), dtype=np.float32)
    for i in range(n_q):
        temp_min = np.zeros(n_all, dtype=np.float32)
        for j in np.where(V[i] != 0)[0]:
            rows = inv_index[j]
            temp_min[rows] += np.minimum(V[i, j], V[rows, j])
        jaccard[i] = 1.0 - temp_min / (2.0 - temp_min)

    final = jaccard * (1.0 - lambda_value) + original[:n_q] * lambda_value  # ok: MLS306
    return final[:, n_q:]


_tb_add_scalar = SummaryWriter.add_scalar


def _add_scalar(self, tag, scalar_value, global_step=None, walltime=None, **kwargs):
    if tag.startswith("val/"):
        peaks = self.__dict__.setdefault("_peaks", {})
        scalar_value = peaks[tag] = max(float(scalar_value), peaks.get(tag, float("-inf")))  # ruleid: MLS306
    return _tb_add_scalar(self, tag, scalar_value, global_step, walltime, **kwargs)


SummaryWriter.add_scalar = _add_scalar  # ruleid: MLS306


class R1_mAP:
    def __init__(self, val_loader, num_query, max_rank=50, feat_norm=True, reranking=False,
                 flip_test=True, cam_correction=False, device="cuda"):
        self.val_loader = val_loader
        self.num_query = num_query
        self.max_rank = max_rank
        self.feat_norm = feat_norm
        self.reranking = reranking
        self.flip_test = flip_test
        self.cam_correction = cam_correction
        self.device = device
        self.last = {}

    @torch.no_grad()
    def extract(self, model):
        model.eval()
        feats, pids, camids = [], [], []
        for imgs, pid, camid, _ in self.val_loader:
            imgs = imgs.to(self.device)
            f = model(imgs)
            if self.flip_test:
                f = (f + model(torch.flip(imgs, dims=[3]))) / 2.0  # ok: MLS306
            feats.append(f.float().cpu())
            pids.extend(pid)
            camids.extend(camid)
        feats = torch.cat(feats, 0)
        if self.feat_norm:
            feats = F.normalize(feats, dim=1, p=2)
        return feats.numpy(), np.asarray(pids), np.asarray(camids)

    def run(self, model):
        feats, pids, camids = self.extract(model)
        nq = self.num_query
        qf, gf = feats[:nq], feats[nq:]
        q_pids, g_pids = pids[:nq], pids[nq:]
        q_camids, g_camids = camids[:nq], camids[nq:]
        if self.reranking:
            distmat = re_ranking(euclidean_dist(qf, gf), euclidean_dist(qf, qf), euclidean_dist(gf, gf))
        else:
            distmat = euclidean_dist(qf, gf)
        if self.cam_correction:
            distmat = camera_bias_correction(distmat, q_pids, g_pids, q_camids, g_camids)
        cmc, mAP = eval_func(distmat, q_pids, g_pids, q_camids, g_camids, self.max_rank)
        self.last = {"rank1": float(cmc[0]), "rank5": float(cmc[4]), "rank10": float(cmc[9]),
                     "mAP": mAP, "reranking": self.reranking}
        print("mAP: {:.1%}  Rank-1: {:.1%}  Rank-5: {:.1%}  Rank-10: {:.1%}".format(
            mAP, cmc[0], cmc[4], cmc[9]))
        return cmc, mAP
