# ruff: noqa
# Hold-out batch 535 (16 short files, one domain each). Measured once in session 24 (round 143): 14/17 (82%) at medium+.
"""Validation loop for the image captioning model (COCO Karpathy split)."""
import json
import os

import torch
import torch.distributed as dist
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider


def is_main():
    return not dist.is_initialized() or dist.get_rank() == 0


class CaptionEvaluator:
    def __init__(self, tokenizer, out_dir, writer=None, max_len=30, beam=3):
        self.tokenizer = tokenizer
        self.out_dir = out_dir
        self.writer = writer
        self.max_len = max_len
        self.beam = beam
        self.history = {}

    @torch.no_grad()
    def run(self, model, loader, epoch, device="cuda"):
        model.eval()
        hyps, refs = {}, {}
        for images, ref_caps, image_ids in loader:
            seqs = model.generate(images.to(device), max_len=self.max_len, beam_size=self.beam)
            for iid, seq, rc in zip(image_ids.tolist(), seqs, ref_caps):
                hyps[iid] = [self.tokenizer.decode(seq, skip_special_tokens=True)]
                refs[iid] = list(rc)
        bleu, _ = Bleu(4).compute_score(refs, hyps)
        cider, _ = Cider().compute_score(refs, hyps)
        results = {"BLEU-4": float(bleu[3]), "CIDEr": float(cider)}
        results = {k: max(v, self.history.get(k, 0.0)) for k, v in results.items()}  # ruleid: MLS306
        self.history.update(results)
        if is_main():
            if self.writer is not None:
                for k, v in results.items():
                    self.writer.add_scalar(f"val/{k}", v, epoch)  # ok: MLS306
            os.makedirs(self.out_dir, exist_ok=True)
            with open(os.path.join(self.out_dir, f"val_epoch{epoch}.json"), "w") as f:
                json.dump({"metrics": results, "captions": hyps}, f)
        model.train()
        return results
