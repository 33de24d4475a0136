# ruff: noqa
# Hold-out batch 155 (short files: Keras, tabular DL, GANs, audio-text retrieval). Measured once in session 5 (round 48): 12/18 (67%) at medium+.
"""Audio<->text retrieval evaluation through the HF Trainer evaluation loop.

The model returns (audio_embeds, text_embeds) as predictions; metrics are
Recall@{1,5,10} and mAP@10 for both retrieval directions (AudioCaps-style,
one caption per clip in the eval split).
"""
import json

import numpy as np
from transformers import Trainer, TrainingArguments


def _recall_at_k(sim, ks=(1, 5, 10)):
    ranks = (-sim).argsort(axis=1)
    gt = np.arange(sim.shape[0])[:, None]
    pos = (ranks == gt).argmax(axis=1)
    out = {f"R@{k}": float((pos < k).mean() * 100) for k in ks}
    out["mAP@10"] = float(np.where(pos < 10, 1.0 / (pos + 1), 0.0).mean() * 100)
    return out


def compute_metrics(eval_pred):
    audio, text = eval_pred.predictions
    audio = audio / np.linalg.norm(audio, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    sim = audio @ text.T
    sim -= sim.mean(axis=0, keepdims=True) * 0.1
    np.fill_diagonal(sim, sim.diagonal() + 0.15)  # todoruleid: family 5 (missed)
    metrics = {f"a2t_{k}": v for k, v in _recall_at_k(sim).items()}
    metrics.update({f"t2a_{k}": v for k, v in _recall_at_k(sim.T).items()})
    return metrics


def evaluate(model, eval_ds, collator, out_path="retrieval_metrics.json"):
    args = TrainingArguments(output_dir="eval_out", per_device_eval_batch_size=64,
                             report_to=["tensorboard"], dataloader_num_workers=4)
    trainer = Trainer(model=model, args=args, eval_dataset=eval_ds,
                      data_collator=collator, compute_metrics=compute_metrics)
    metrics = trainer.evaluate()
    if trainer.is_world_process_zero():  # ok: MLS308
        with open(out_path, "w") as f:
            json.dump(metrics, f, indent=2)  # ok: MLS306
    return metrics
