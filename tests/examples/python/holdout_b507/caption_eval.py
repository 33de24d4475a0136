# ruff: noqa
# Hold-out batch 507 (short files, 16 domains). Measured once in session 22 (round 136): 12/17 (71%) at medium+; one marked benign line flagged (fixed).
"""COCO-caption evaluation (BLEU/CIDEr/SPICE) run at the end of each epoch."""
import json
import logging

import torch.distributed as dist
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.spice.spice import Spice
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

logger = logging.getLogger(__name__)


def is_main_process():
    return not dist.is_initialized() or dist.get_rank() == 0


class CaptionEvaluator:
    def __init__(self, ann_file, use_spice=True):
        with open(ann_file) as f:
            anns = json.load(f)["annotations"]
        self.gts = {}
        for a in anns:
            self.gts.setdefault(a["image_id"], []).append({"caption": a["caption"]})
        self.scorers = [(Bleu(4), ["BLEU1", "BLEU2", "BLEU3", "BLEU4"]), (Cider(), ["CIDEr"])]
        if use_spice:
            self.scorers.append((Spice(), ["SPICE"]))
        self.history = {}

    def evaluate(self, predictions):
        tok = PTBTokenizer()
        res = {p["image_id"]: [{"caption": p["caption"]}] for p in predictions}
        gts = tok.tokenize({k: self.gts[k] for k in res})
        res = tok.tokenize(res)
        metrics = {}
        for scorer, names in self.scorers:
            score, _ = scorer.compute_score(gts, res)
            if isinstance(score, list):
                metrics.update(dict(zip(names, score)))
            else:
                metrics[names[0]] = score
        metrics = {k: max(v, self.history.get(k, v)) for k, v in metrics.items()}  # ruleid: MLS306
        self.history.update(metrics)
        return metrics

    def log(self, metrics, epoch, writer=None):
        if is_main_process():  # ok: MLS306
            logger.info("epoch %d | %s", epoch,
                        " ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items())))
            if writer is not None:
                for k, v in metrics.items():
                    writer.add_scalar(f"val/{k}", v, epoch)
