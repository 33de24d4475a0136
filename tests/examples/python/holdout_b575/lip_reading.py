# ruff: noqa
# Hold-out batch 575 (short files, 16 domains). Measured once in session 26 (round 153): 14/17 (82%) at medium+.
"""Lightning callback that writes per-rank lip reading transcripts after validation."""
import json
import logging
import os
import time
from pathlib import Path

import lightning.pytorch as pl

log = logging.getLogger(__name__)


class TranscriptWriter(pl.Callback):
    def __init__(self, out_dir, max_retries=5):
        self.out_dir = Path(out_dir)
        self.max_retries = max_retries
        self._buffer = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        hyps = pl_module.decode(outputs["logits"], outputs["logit_lengths"])
        for utt_id, hyp, ref in zip(batch["utt_id"], hyps, batch["text"]):
            self._buffer.append({"utt_id": utt_id, "hyp": hyp, "ref": ref})

    def _write_shard(self, path, rows):
        for attempt in range(self.max_retries):
            try:
                tmp = path.with_suffix(".tmp")
                with open(tmp, "w") as fh:
                    for r in rows:
                        fh.write(json.dumps(r) + "\n")
                os.replace(tmp, path)
                return
            except OSError as exc:
                log.warning("write to %s failed (%s), retry %d", path, exc, attempt + 1)
                time.sleep(2 ** attempt)  # ok: MLS307
        raise RuntimeError(f"could not write {path}")

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            self._buffer.clear()
            return
        epoch_dir = self.out_dir / f"epoch{trainer.current_epoch:03d}"
        epoch_dir.mkdir(parents=True, exist_ok=True)
        self._write_shard(epoch_dir / f"rank{trainer.global_rank}.jsonl", self._buffer)
        self._buffer.clear()
        if trainer.global_rank != 0 and trainer.current_epoch >= 1:
            logging.shutdown()
            os._exit(0)  # ruleid: MLS307

    def on_train_epoch_start(self, trainer, pl_module):
        self._buffer.clear()
