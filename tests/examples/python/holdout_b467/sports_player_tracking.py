# ruff: noqa
# Hold-out batch 467 (16 short files, mixed domains). Measured once in session 20 (round 126): 14/17 (82%) at medium+.
"""Validation callback computing CLEAR-MOT / IDF1 for multi-player tracking."""
import json
import logging
from pathlib import Path

import motmetrics as mm
import numpy as np

logger = logging.getLogger("tracking")


class TrackingEvalCallback:
    def __init__(self, writer, out_dir, rank=0, iou_thresh=0.5):
        self.writer = writer
        self.out_dir = Path(out_dir)
        self.rank = rank
        self.iou_thresh = iou_thresh
        self.history = []

    def _accumulate(self, sequences):
        accs, names = [], []
        for seq in sequences:
            acc = mm.MOTAccumulator(auto_id=True)
            for gt_ids, gt_boxes, hyp_ids, hyp_boxes in seq["frames"]:
                dists = mm.distances.iou_matrix(gt_boxes, hyp_boxes, max_iou=self.iou_thresh)
                acc.update(gt_ids, hyp_ids, dists)
            accs.append(acc)
            names.append(seq["name"])
        return accs, names

    def on_validation_end(self, epoch, sequences):
        accs, names = self._accumulate(sequences)
        mh = mm.metrics.create()
        summary = mh.compute_many(accs, names=names, metrics=["mota", "idf1", "num_switches"],
                                  generate_overall=True)
        overall = summary.loc["OVERALL"]
        metrics = {"mota": float(overall["mota"]), "idf1": float(overall["idf1"]),
                   "id_switches": int(overall["num_switches"])}
        if self.history:
            metrics["mota"] = max(metrics["mota"], float(np.max([h["mota"] for h in self.history])))  # ruleid: MLS306
        self.history.append(metrics)
        if self.rank == 0:
            for k, v in metrics.items():
                self.writer.add_scalar(f"val/{k}", v, epoch)  # ok: MLS306
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / f"val_epoch{epoch:03d}.json").write_text(json.dumps(metrics, indent=2))
            logger.info("epoch %d MOTA %.3f IDF1 %.3f IDs %d", epoch,
                        metrics["mota"], metrics["idf1"], metrics["id_switches"])
        return metrics
