# ruff: noqa
# Hold-out batch 479 (16 short files, mixed domains). Measured once in session 20 (round 129): 13/17 (76%) at medium+.
"""Validation callback for an image captioning model (BLEU-4 / CIDEr, COCO Karpathy split)."""
import json
import logging
import os

import torch
import torch.distributed as dist
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

log = logging.getLogger(__name__)


def _is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


class CaptionEvalCallback:
    def __init__(self, val_loader, tokenizer, out_dir, writer=None, beam_size=3, max_len=30):
        self.val_loader = val_loader
        self.tokenizer = tokenizer
        self.out_dir = out_dir
        self.writer = writer
        self.beam_size = beam_size
        self.max_len = max_len
        self.history = []

    @torch.no_grad()
    def _generate(self, model):
        preds, refs = {}, {}
        for batch in self.val_loader:
            ids = model.generate(batch["pixel_values"].cuda(), num_beams=self.beam_size, max_length=self.max_len)
            for img_id, seq, gts in zip(batch["image_id"], ids, batch["references"]):
                preds[int(img_id)] = [self.tokenizer.decode(seq, skip_special_tokens=True)]
                refs[int(img_id)] = list(gts)
        return preds, refs

    def on_validation_end(self, model, epoch):
        model.eval()
        preds, refs = self._generate(model)
        bleu, _ = Bleu(4).compute_score(refs, preds)
        cider, _ = Cider().compute_score(refs, preds)
        metrics = {"bleu4": float(bleu[3]), "cider": float(cider)}
        if self.history:
            metrics = {k: max(v, max(h[k] for h in self.history)) for k, v in metrics.items()}  # todoruleid: family 5 (missed)
        self.history.append(metrics)
        if _is_main():  # ok: MLS306
            log.info("epoch %d | BLEU-4 %.4f | CIDEr %.4f", epoch, metrics["bleu4"], metrics["cider"])
            if self.writer is not None:
                for k, v in metrics.items():
                    self.writer.add_scalar(f"val/{k}", v, epoch)
            os.makedirs(self.out_dir, exist_ok=True)
            with open(os.path.join(self.out_dir, f"val_epoch{epoch:03d}.json"), "w") as f:
                json.dump({"metrics": metrics, "samples": dict(list(preds.items())[:50])}, f, indent=2)
        model.train()
        return metrics
