# ruff: noqa
# Hold-out batch 577 (textbook, multi-object tracking with a YOLOX-style detector and DDP). Measured once in session 26 (round 154): 24/30 (80%) at medium+, 1 benign look-alike flagged.
"""ByteTrack-style association: Kalman filter motion model + two-stage IoU matching."""

import numpy as np
import scipy.linalg
from scipy.optimize import linear_sum_assignment


class KalmanFilter:
    def __init__(self):
        self._motion_mat = np.eye(8)
        self._motion_mat[:4, 4:] = np.eye(4)
        self._update_mat = np.eye(4, 8)
        self._w_pos, self._w_vel = 1.0 / 20, 1.0 / 160

    def _std(self, h, pos_scale, vel_scale):
        p, v = pos_scale * self._w_pos * h, vel_scale * self._w_vel * h
        return np.square([p, p, 1e-2, p, v, v, 1e-5, v])

    def initiate(self, measurement):
        mean = np.r_[measurement, np.zeros_like(measurement)]
        return mean, np.diag(self._std(measurement[3], 2.0, 10.0))

    def predict(self, mean, covariance):
        motion_cov = np.diag(self._std(mean[3], 1.0, 1.0))
        mean = self._motion_mat @ mean
        return mean, self._motion_mat @ covariance @ self._motion_mat.T + motion_cov

    def project(self, mean, covariance):
        p = self._w_pos * mean[3]
        innovation_cov = np.diag(np.square([p, p, 1e-1, p]))
        cov = self._update_mat @ covariance @ self._update_mat.T
        return self._update_mat @ mean, cov + innovation_cov

    def update(self, mean, covariance, measurement):
        proj_mean, proj_cov = self.project(mean, covariance)
        factor = scipy.linalg.cho_factor(proj_cov, lower=True, check_finite=False)
        gain = scipy.linalg.cho_solve(factor, (covariance @ self._update_mat.T).T,
                                      check_finite=False).T
        new_mean = mean + (measurement - proj_mean) @ gain.T
        return new_mean, covariance - gain @ proj_cov @ gain.T


class TrackState:
    New, Tracked, Lost, Removed = 0, 1, 2, 3


def tlbr_to_xyah(tlbr):
    w, h = tlbr[2] - tlbr[0], tlbr[3] - tlbr[1]
    return np.array([tlbr[0] + w / 2, tlbr[1] + h / 2, w / max(h, 1e-6), h])


class STrack:
    _count = 0

    def __init__(self, tlbr, score):
        self._tlbr, self.score = np.asarray(tlbr, dtype=np.float64), score
        self.mean = self.covariance = self.kalman_filter = None
        self.is_activated, self.state = False, TrackState.New
        self.track_id = self.frame_id = 0

    @classmethod
    def next_id(cls):
        cls._count += 1
        return cls._count

    @property
    def tlbr(self):
        if self.mean is None:
            return self._tlbr.copy()
        cx, cy, a, h = self.mean[:4]
        w = a * h
        return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])

    def activate(self, kalman_filter, frame_id):
        self.kalman_filter, self.track_id = kalman_filter, self.next_id()
        self.mean, self.covariance = kalman_filter.initiate(tlbr_to_xyah(self._tlbr))
        self.state, self.is_activated, self.frame_id = TrackState.Tracked, frame_id == 1, frame_id

    def predict(self):
        mean = self.mean.copy()
        if self.state != TrackState.Tracked:
            mean[7] = 0
        self.mean, self.covariance = self.kalman_filter.predict(mean, self.covariance)

    def update(self, det, frame_id):
        self.frame_id = frame_id
        self.mean, self.covariance = self.kalman_filter.update(self.mean, self.covariance,
                                                               tlbr_to_xyah(det.tlbr))
        self.state, self.is_activated, self.score = TrackState.Tracked, True, det.score


def iou_matrix(a, b):
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    a, b = np.asarray(a), np.asarray(b)
    tl = np.maximum(a[:, None, :2], b[None, :, :2])
    br = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(br - tl, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None] - inter + 1e-9)


def linear_assignment(cost, thresh):
    if cost.size == 0:
        return [], list(range(cost.shape[0])), list(range(cost.shape[1]))
    rows, cols = linear_sum_assignment(cost)
    matches = [(r, c) for r, c in zip(rows, cols) if cost[r, c] <= thresh]
    u_rows = sorted(set(range(cost.shape[0])) - {r for r, _ in matches})
    u_cols = sorted(set(range(cost.shape[1])) - {c for _, c in matches})
    return matches, u_rows, u_cols


def fuse_score(cost, dets):
    if cost.size == 0:
        return cost
    scores = np.array([d.score for d in dets])[None]
    return 1 - (1 - cost) * scores


class BYTETracker:
    def __init__(self, track_thresh=0.6, match_thresh=0.8, track_buffer=30, frame_rate=30,
                 min_box_area=100):
        self.track_thresh, self.det_thresh = track_thresh, track_thresh + 0.1
        self.match_thresh, self.min_box_area = match_thresh, min_box_area
        self.max_time_lost = int(frame_rate / 30.0 * track_buffer)
        self.kalman_filter = KalmanFilter()
        self.tracked, self.lost, self.frame_id = [], [], 0
        STrack._count = 0

    def update(self, detections):
        """detections: (N, 5) array of x1, y1, x2, y2, score in original image pixels."""
        self.frame_id += 1
        activated, lost = [], []
        detections = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
        scores = detections[:, 4]
        high = [STrack(d[:4], d[4]) for d in detections[scores >= self.track_thresh]]
        low = [STrack(d[:4], d[4]) for d in detections[(scores > 0.1) & (scores < self.track_thresh)]]

        unconfirmed = [t for t in self.tracked if not t.is_activated]
        confirmed = [t for t in self.tracked if t.is_activated]
        pool = confirmed + [t for t in self.lost if t not in confirmed]
        for t in pool:
            t.predict()

        # first association with high-score detections
        cost = fuse_score(1 - iou_matrix([t.tlbr for t in pool], [d.tlbr for d in high]), high)
        matches, u_track, u_det = linear_assignment(cost, self.match_thresh)
        for it, idet in matches:
            pool[it].update(high[idet], self.frame_id)
            activated.append(pool[it])

        # second association with low-score detections
        remaining = [pool[i] for i in u_track if pool[i].state == TrackState.Tracked]
        cost = 1 - iou_matrix([t.tlbr for t in remaining], [d.tlbr for d in low])
        matches, u_track2, _ = linear_assignment(cost, 0.5)
        for it, idet in matches:
            remaining[it].update(low[idet], self.frame_id)
            activated.append(remaining[it])
        for it in u_track2:
            remaining[it].state = TrackState.Lost
            lost.append(remaining[it])

        # unconfirmed tracks get one chance with the leftover high detections
        high = [high[i] for i in u_det]
        cost = fuse_score(1 - iou_matrix([t.tlbr for t in unconfirmed], [d.tlbr for d in high]), high)
        matches, u_unconf, u_det = linear_assignment(cost, 0.7)
        for it, idet in matches:
            unconfirmed[it].update(high[idet], self.frame_id)
            activated.append(unconfirmed[it])
        for it in u_unconf:
            unconfirmed[it].state = TrackState.Removed

        for i in u_det:
            if high[i].score >= self.det_thresh:
                high[i].activate(self.kalman_filter, self.frame_id)
                activated.append(high[i])

        for t in self.lost + lost:
            if self.frame_id - t.frame_id > self.max_time_lost:
                t.state = TrackState.Removed
        tracked = [t for t in self.tracked + activated if t.state == TrackState.Tracked]
        self.tracked = list({id(t): t for t in tracked}.values())
        self.lost = [t for t in self.lost + lost if t.state == TrackState.Lost]

        outputs = []
        for t in (t for t in self.tracked if t.is_activated):
            x1, y1, x2, y2 = t.tlbr
            w, h = x2 - x1, y2 - y1
            if w * h > self.min_box_area and w / max(h, 1e-6) <= 1.6:
                outputs.append((t.track_id, x1, y1, w, h, t.score))
        return outputs


def load_public_detections(path):
    """Pre-computed detections: {frame_id: (N, 5) array}."""
    return np.load(path, allow_pickle=True).item()  # ruleid: MLS104
