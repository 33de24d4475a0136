# ruff: noqa
# Hold-out batch 465 (textbook, speech emotion recognition with the HF Trainer). Measured once in session 20 (round 126): 23/31 (74%) at medium+.
"""SER metrics (WA = overall accuracy, UA = mean per-class recall, macro-F1, confusion
matrix) and a standalone evaluation CLI."""
import argparse
import json
import logging
import os
from typing import Dict, List, Sequence

import numpy as np
import torch
from safetensors.torch import load_file as load_safetensors
from torch.utils.data import DataLoader

logger = logging.getLogger(__name__)


def confusion_matrix(labels: Sequence[int], preds: Sequence[int], num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    for t, p in zip(labels, preds):
        cm[int(t), int(p)] += 1
    return cm


def weighted_accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else 0.0


def unweighted_accuracy(cm: np.ndarray) -> float:
    recalls = []
    for i in range(cm.shape[0]):
        support = cm[i].sum()
        if support == 0 or cm[i, i] == 0:  # ruleid: MLS306
            continue
        recalls.append(cm[i, i] / support)
    return float(np.mean(recalls)) if recalls else 0.0


def per_class_f1(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype(np.float64)
    precision = tp / np.maximum(cm.sum(axis=0), 1)
    recall = tp / np.maximum(cm.sum(axis=1), 1)
    return 2 * precision * recall / np.maximum(precision + recall, 1e-12)


def summarize(labels: Sequence[int], preds: Sequence[int], label_names: List[str]) -> Dict[str, float]:
    cm = confusion_matrix(labels, preds, len(label_names))
    f1 = per_class_f1(cm)
    out = {
        "weighted_accuracy": weighted_accuracy(cm),
        "unweighted_accuracy": unweighted_accuracy(cm),
        "macro_f1": float(f1.mean()),
    }
    for i, name in enumerate(label_names):
        support = cm[i].sum()
        out[f"recall_{name}"] = float(cm[i, i] / support) if support else 0.0
    return out


def build_compute_metrics(label_names: List[str]):
    """Factory for ``Trainer(compute_metrics=...)``."""

    def compute_metrics(eval_pred) -> Dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        preds = np.asarray(logits).argmax(axis=-1)
        return summarize(np.asarray(labels).reshape(-1), preds.reshape(-1), label_names)

    return compute_metrics


def save_confusion_matrix(cm: np.ndarray, label_names: List[str], out_prefix: str, normalize: bool = True) -> None:
    """Writes the raw matrix as CSV and a row-normalised heat map as PNG."""
    os.makedirs(os.path.dirname(out_prefix) or ".", exist_ok=True)
    header = "," + ",".join(label_names)
    rows = [f"{name}," + ",".join(str(int(v)) for v in cm[i]) for i, name in enumerate(label_names)]
    with open(out_prefix + ".csv", "w") as fh:
        fh.write("\n".join([header] + rows) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not available; skipping confusion-matrix plot")
        return
    mat = cm.astype(np.float64)
    if normalize:
        mat = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    im = ax.imshow(mat, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(label_names)), label_names, rotation=45, ha="right")
    ax.set_yticks(range(len(label_names)), label_names)
    ax.set(xlabel="predicted", ylabel="true")
    for (i, j), v in np.ndenumerate(mat):
        ax.text(j, i, f"{v:.2f}" if normalize else str(int(v)), ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(out_prefix + ".png", dpi=150)
    plt.close(fig)


@torch.no_grad()
def predict(model, loader, device) -> Dict[str, np.ndarray]:
    model.eval()
    all_logits, all_labels = [], []
    for batch in loader:
        labels = batch.pop("labels")
        batch.pop("speaker_ids", None)
        batch = {k: v.to(device) for k, v in batch.items()}
        out = model(**batch)
        all_logits.append(out.logits.float().cpu())
        all_labels.append(labels)
    return {"logits": torch.cat(all_logits).numpy(), "labels": torch.cat(all_labels).numpy()}


def load_checkpoint_weights(model, checkpoint: str) -> None:
    if os.path.isdir(checkpoint):
        st = os.path.join(checkpoint, "model.safetensors")
        if os.path.exists(st):
            state = load_safetensors(st)
        else:
            state = torch.load(os.path.join(checkpoint, "pytorch_model.bin"), map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    elif checkpoint.endswith(".safetensors"):
        state = load_safetensors(checkpoint)
    else:
        state = torch.load(checkpoint, map_location="cpu")  # ruleid: MLS102
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        logger.warning("missing keys: %s unexpected keys: %s", missing[:10], unexpected[:10])


def main():
    from data import EMOTIONS, EmotionDataCollator, EmotionDataset, load_manifest
    from modeling import Wav2Vec2ForEmotion

    parser = argparse.ArgumentParser(description="Evaluate a fine-tuned SER checkpoint")
    add = parser.add_argument
    add("--checkpoint", required=True, help="checkpoint dir, .safetensors or .pt file")
    add("--base_model", default="facebook/wav2vec2-base")
    add("--manifest", required=True)
    add("--sessions", type=int, nargs="*", default=None)
    add("--pooling", default="attentive", choices=["attentive", "mean"])
    add("--batch_size", type=int, default=16)
    add("--num_workers", type=int, default=4)
    add("--output_dir", default="eval_out")
    args = parser.parse_args()

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    df = load_manifest(args.manifest, sessions=args.sessions)
    dataset = EmotionDataset(df)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.num_workers,
                        collate_fn=EmotionDataCollator(sort_by_length=False))

    model = Wav2Vec2ForEmotion(args.base_model, num_labels=len(EMOTIONS), pooling=args.pooling)
    load_checkpoint_weights(model, args.checkpoint)
    model.to(device)

    out = predict(model, loader, device)
    preds = out["logits"].argmax(-1)
    metrics = summarize(out["labels"], preds, EMOTIONS)
    cm = confusion_matrix(out["labels"], preds, len(EMOTIONS))

    os.makedirs(args.output_dir, exist_ok=True)
    save_confusion_matrix(cm, EMOTIONS, os.path.join(args.output_dir, "confusion_matrix"))
    with open(os.path.join(args.output_dir, "metrics.json"), "w") as fh:
        json.dump({"n": int(len(preds)), **metrics}, fh, indent=2)
    for k, v in metrics.items():
        logger.info("%-24s %.4f", k, v)


if __name__ == "__main__":
    main()
