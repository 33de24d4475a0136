# ruff: noqa
# Hold-out batch 513 (textbook, multi-object tracking). Measured once in session 23 (round 138): 26/30 (87%) at medium+.
"""Online association (JDE / FairMOT cascade): Kalman filter motion model + Hungarian matching."""
import numpy as np
import scipy.linalg
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

CHI2INV95_4DOF = 9.4877


class KalmanFilter:
    """Constant-velocity model in (cx, cy, aspect, height) space."""

    def __init__(self, w_pos=1.0 / 20, w_vel=1.0 / 160):
        self._F = np.eye(8)
        self._F[:4, 4:] = np.eye(4)
        self._H = np.eye(4, 8)
        self.w_pos, self.w_vel = w_pos, w_vel

    def initiate(self, z):
        h = z[3]
        p, v = 2 * self.w_pos * h, 10 * self.w_vel * h
        return np.r_[z, np.zeros(4)], np.diag(np.square([p, p, 1e-2, p, v, v, 1e-5, v]))

    def predict(self, mean, cov):
        h = mean[3]
        p, v = self.w_pos * h, self.w_vel * h
        Q = np.diag(np.square([p, p, 1e-2, p, v, v, 1e-5, v]))
        return self._F @ mean, self._F @ cov @ self._F.T + Q

    def project(self, mean, cov):
        p = self.w_pos * mean[3]
        R = np.diag(np.square([p, p, 1e-1, p]))
        return self._H @ mean, self._H @ cov @ self._H.T + R

    def update(self, mean, cov, z):
        proj_mean, proj_cov = self.project(mean, cov)
        chol = scipy.linalg.cho_factor(proj_cov, lower=True, check_finite=False)
        gain = scipy.linalg.cho_solve(chol, (cov @ self._H.T).T, check_finite=False).T
        return mean + (z - proj_mean) @ gain.T, cov - gain @ proj_cov @ gain.T

    def gating_distance(self, mean, cov, zs):
        mean, cov = self.project(mean, cov)
        chol = np.linalg.cholesky(cov)
        d = scipy.linalg.solve_triangular(chol, (zs - mean).T, lower=True, check_finite=False)
        return np.sum(d * d, axis=0)


class TrackState:
    New, Tracked, Lost, Removed = 0, 1, 2, 3


class STrack:
    _count = 0

    def __init__(self, tlwh, score, feat, alpha=0.9):
        self._tlwh = np.asarray(tlwh, dtype=np.float64)
        self.score = float(score)
        self.mean = self.covariance = self.kalman_filter = None
        self.is_activated = False
        self.state = TrackState.New
        self.track_id = self.frame_id = self.start_frame = 0
        self.alpha = alpha
        self.smooth_feat = self.curr_feat = None
        self.update_features(feat)

    def update_features(self, feat):
        feat = feat / (np.linalg.norm(feat) + 1e-12)
        self.curr_feat = feat
        smooth = feat if self.smooth_feat is None else self.alpha * self.smooth_feat + (1 - self.alpha) * feat
        self.smooth_feat = smooth / (np.linalg.norm(smooth) + 1e-12)

    def predict(self):
        mean_state = self.mean.copy()
        mean_state[7] = mean_state[7] if self.state == TrackState.Tracked else 0.0
        self.mean, self.covariance = self.kalman_filter.predict(mean_state, self.covariance)

    def activate(self, kalman_filter, frame_id):
        STrack._count += 1
        self.kalman_filter = kalman_filter
        self.track_id = STrack._count
        self.mean, self.covariance = kalman_filter.initiate(self.tlwh_to_xyah(self._tlwh))
        self.state = TrackState.Tracked
        self.is_activated = frame_id == 1
        self.frame_id = self.start_frame = frame_id

    def update(self, det, frame_id):
        self.mean, self.covariance = self.kalman_filter.update(
            self.mean, self.covariance, self.tlwh_to_xyah(det.tlwh)
        )
        self.update_features(det.curr_feat)
        self.state = TrackState.Tracked
        self.is_activated = True
        self.score = det.score
        self.frame_id = frame_id

    @property
    def tlwh(self):
        if self.mean is None:
            return self._tlwh.copy()
        ret = self.mean[:4].copy()
        ret[2] *= ret[3]
        ret[:2] -= ret[2:] / 2
        return ret

    @property
    def tlbr(self):
        tlwh = self.tlwh
        return np.r_[tlwh[:2], tlwh[:2] + tlwh[2:]]

    @staticmethod
    def tlwh_to_xyah(tlwh):
        ret = np.asarray(tlwh, dtype=np.float64).copy()
        ret[:2] += ret[2:] / 2
        ret[2] /= ret[3]
        return ret


def box_iou(a, b):
    """a: N x 4, b: M x 4 in tlbr -> N x M IoU."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(axis=1), (b[:, 2:] - b[:, :2]).prod(axis=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter + 1e-9)


def iou_distance(tracks, dets):
    return 1.0 - box_iou([t.tlbr for t in tracks], [d.tlbr for d in dets])


def embedding_distance(tracks, dets):
    if len(tracks) == 0 or len(dets) == 0:
        return np.zeros((len(tracks), len(dets)), dtype=np.float64)
    track_feats, det_feats = np.asarray([t.smooth_feat for t in tracks]), np.asarray([d.curr_feat for d in dets])
    return np.maximum(0.0, cdist(track_feats, det_feats, metric="cosine"))


def fuse_motion(kf, cost, tracks, dets, lambda_=0.98):
    if cost.size == 0:
        return cost
    measurements = np.asarray([STrack.tlwh_to_xyah(d.tlwh) for d in dets])
    for row, track in enumerate(tracks):
        gating = kf.gating_distance(track.mean, track.covariance, measurements)
        cost[row, gating > CHI2INV95_4DOF] = np.inf
        cost[row] = lambda_ * cost[row] + (1 - lambda_) * gating
    return cost


def linear_assignment(cost, thresh):
    if cost.size == 0:
        return [], list(range(cost.shape[0])), list(range(cost.shape[1]))
    cost = np.where(np.isfinite(cost), cost, 1e5)
    rows, cols = linear_sum_assignment(cost)
    matches = [(r, c) for r, c in zip(rows, cols) if cost[r, c] <= thresh]
    matched_r, matched_c = {r for r, _ in matches}, {c for _, c in matches}
    return (matches, [r for r in range(cost.shape[0]) if r not in matched_r],
            [c for c in range(cost.shape[1]) if c not in matched_c])


def _join(a, b):
    seen = {t.track_id for t in a}
    return a + [t for t in b if t.track_id not in seen]


def _sub(a, b):
    ids = {t.track_id for t in b}
    return [t for t in a if t.track_id not in ids]


class JDETracker:
    def __init__(self, frame_rate=30, track_buffer=30, det_thresh=0.4,
                 emb_thresh=0.4, iou_thresh=0.5, unconfirmed_thresh=0.7):
        self.frame_id, self.det_thresh = 0, det_thresh
        self.emb_thresh, self.iou_thresh, self.unconfirmed_thresh = emb_thresh, iou_thresh, unconfirmed_thresh
        self.max_time_lost = int(frame_rate / 30.0 * track_buffer)
        self.kalman_filter = KalmanFilter()
        self.tracked, self.lost = [], []
        STrack._count = 0

    def update(self, boxes, scores, embeddings):
        """boxes: N x 4 tlbr in image coordinates; returns the list of active STracks."""
        self.frame_id += 1
        updated, lost, removed = [], [], []
        dets = [STrack(np.r_[b[:2], b[2:] - b[:2]], s, e) for b, s, e in zip(boxes, scores, embeddings)
                if b[2] > b[0] and b[3] > b[1]]
        unconfirmed = [t for t in self.tracked if not t.is_activated]
        confirmed = [t for t in self.tracked if t.is_activated]

        # step 1: appearance + motion gating over tracked and lost tracks
        pool = _join(confirmed, self.lost)
        for t in pool:
            t.predict()
        cost = fuse_motion(self.kalman_filter, embedding_distance(pool, dets), pool, dets)
        matches, u_track, u_det = linear_assignment(cost, self.emb_thresh)
        for it, idet in matches:
            pool[it].update(dets[idet], self.frame_id)
            updated.append(pool[it])

        # step 2: IoU on the remaining currently-tracked tracks
        dets = [dets[i] for i in u_det]
        rest = [pool[i] for i in u_track if pool[i].state == TrackState.Tracked]
        matches, u_track, u_det = linear_assignment(iou_distance(rest, dets), self.iou_thresh)
        for it, idet in matches:
            rest[it].update(dets[idet], self.frame_id)
            updated.append(rest[it])
        for it in u_track:
            rest[it].state = TrackState.Lost
            lost.append(rest[it])

        # step 3: unconfirmed tracks (seen only once)
        dets = [dets[i] for i in u_det]
        matches, u_unconf, u_det = linear_assignment(iou_distance(unconfirmed, dets), self.unconfirmed_thresh)
        for it, idet in matches:
            unconfirmed[it].update(dets[idet], self.frame_id)
            updated.append(unconfirmed[it])
        removed.extend(unconfirmed[i] for i in u_unconf)

        # step 4: new tracks from confident leftovers
        for idet in u_det:
            if dets[idet].score >= self.det_thresh:
                dets[idet].activate(self.kalman_filter, self.frame_id)
                updated.append(dets[idet])

        # step 5: age out lost tracks
        removed.extend(t for t in self.lost if self.frame_id - t.frame_id > self.max_time_lost)

        self.tracked = _join([t for t in self.tracked if t.state == TrackState.Tracked], updated)
        self.tracked = _sub(self.tracked, removed + lost)
        self.lost = _sub(_join(self.lost, lost), self.tracked + removed)
        return [t for t in self.tracked if t.is_activated]
