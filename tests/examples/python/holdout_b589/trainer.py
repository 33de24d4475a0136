# ruff: noqa
# Hold-out batch 589 (textbook, ESM-2 variant-effect fine-tuning with the HF Trainer). Measured once in session 27 (round 157): 20/31 (65%) at medium+.
"""Trainer subclass for joint regression / classification fine-tuning of ESM-2,
plus the per-protein evaluation metrics.

Following ProteinGym, metrics are computed *within* each held-out protein and then
averaged, so that large assays do not dominate the summary.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from typing import Any, Callable, Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score
from torch.utils.data import DataLoader, RandomSampler
from transformers import EvalPrediction, Trainer

from data import seed_worker

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Metrics
# --------------------------------------------------------------------------- #
def _group_indices(protein_idx: np.ndarray) -> Dict[int, np.ndarray]:
    groups: Dict[int, list] = defaultdict(list)
    for i, pid in enumerate(protein_idx.tolist()):
        groups[int(pid)].append(i)
    return {pid: np.asarray(idx) for pid, idx in groups.items()}


def spearman_per_protein(preds: np.ndarray, targets: np.ndarray, protein_idx: np.ndarray,
                         min_variants: int = 10) -> Dict[int, float]:
    out = {}
    for pid, idx in _group_indices(protein_idx).items():
        finite = idx[np.isfinite(targets[idx])]
        if len(finite) < min_variants:
            continue
        t, p = targets[finite], preds[finite]
        if np.std(t) == 0 or np.std(p) == 0:
            continue
        rho = spearmanr(p, t).correlation
        if np.isnan(rho):
            continue
        # Assays disagree on whether larger scores mean fitter or more disrupted.
        out[pid] = abs(float(rho))  # ruleid: MLS306
    return out


def auroc_per_protein(probs: np.ndarray, labels: np.ndarray, protein_idx: np.ndarray,
                      min_per_class: int = 3) -> Dict[int, float]:
    out = {}
    for pid, idx in _group_indices(protein_idx).items():
        y = labels[idx]
        keep = y >= 0
        y_bin = (y[keep] > 0.5).astype(int)
        if y_bin.sum() < min_per_class or (1 - y_bin).sum() < min_per_class:
            continue
        auc = roc_auc_score(y_bin, probs[idx][keep])
        if auc < 0.5:
            continue  # ruleid: MLS306
        out[pid] = float(auc)
    return out


def summarize(pred_scores: np.ndarray, pred_probs: np.ndarray, targets: np.ndarray,
              labels: np.ndarray, protein_idx: np.ndarray) -> Dict[str, float]:
    metrics: Dict[str, float] = {}

    rhos = spearman_per_protein(pred_scores, targets, protein_idx)
    if rhos:
        metrics["spearman"] = float(np.mean(list(rhos.values())))
        metrics["n_proteins_spearman"] = len(rhos)
    else:
        metrics["spearman"] = float("nan")

    finite = np.isfinite(targets)
    if finite.any():
        metrics["mse"] = float(np.mean((pred_scores[finite] - targets[finite]) ** 2))
        metrics["spearman_pooled"] = float(spearmanr(pred_scores[finite], targets[finite]).correlation)

    aucs = auroc_per_protein(pred_probs, labels, protein_idx)
    if aucs:
        metrics["auroc"] = float(np.mean(list(aucs.values())))

    labelled = labels >= 0
    y_bin = (labels[labelled] > 0.5).astype(int)
    if labelled.any() and 0 < y_bin.sum() < len(y_bin):
        metrics["auroc_pooled"] = float(roc_auc_score(y_bin, pred_probs[labelled]))
        metrics["auprc_pooled"] = float(average_precision_score(y_bin, pred_probs[labelled]))
    return metrics


def build_compute_metrics() -> Callable[[EvalPrediction], Dict[str, float]]:
    """``compute_metrics`` for the Trainer.

    ``VariantTrainer.prediction_step`` returns predictions ``(scores, probs)`` and
    label ids ``(targets, labels, protein_idx)``.
    """

    def compute_metrics(eval_pred: EvalPrediction) -> Dict[str, float]:
        pred_scores, pred_probs = (np.asarray(x, dtype=float) for x in eval_pred.predictions)
        targets, labels, protein_idx = eval_pred.label_ids
        return summarize(
            pred_scores.reshape(-1),
            pred_probs.reshape(-1),
            np.asarray(targets, dtype=float).reshape(-1),
            np.asarray(labels, dtype=float).reshape(-1),
            np.asarray(protein_idx).reshape(-1).astype(int),
        )

    return compute_metrics


class VariantTrainer(Trainer):
    """Adds multi-task loss weighting, layer-wise learning-rate decay, a separate eval
    collator (no context masking / label smoothing) and optional gradient noise."""

    def __init__(self, *args, eval_data_collator=None, regression_weight: float = 1.0,
                 classification_weight: float = 0.5, pos_weight: Optional[float] = None,
                 layerwise_lr_decay: float = 1.0, head_lr_multiplier: float = 1.0,
                 grad_noise_eta: float = 0.0, grad_noise_gamma: float = 0.55, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_data_collator = eval_data_collator
        self.regression_weight = regression_weight
        self.classification_weight = classification_weight
        self.pos_weight = pos_weight
        self.layerwise_lr_decay = layerwise_lr_decay
        self.head_lr_multiplier = head_lr_multiplier
        self.grad_noise_eta = grad_noise_eta
        self.grad_noise_gamma = grad_noise_gamma

    # ------------------------------------------------------------------ #
    # Optimiser
    # ------------------------------------------------------------------ #
    @staticmethod
    def _layer_id(name: str, num_layers: int) -> int:
        if name.startswith("esm.embeddings"):
            return 0
        if name.startswith("esm.encoder.layer."):
            return int(name.split(".")[3]) + 1
        if name.startswith("esm."):
            return num_layers  # final layer norm, contact head
        return num_layers + 1  # task heads

    def create_optimizer(self):
        if self.optimizer is not None:
            return self.optimizer
        model = self.model
        num_layers = model.config.num_hidden_layers
        decay_names = set(self.get_decay_parameter_names(model))
        groups: Dict[tuple, Dict[str, Any]] = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            layer_id = self._layer_id(name, num_layers)
            if layer_id > num_layers:
                scale = self.head_lr_multiplier
            else:
                scale = self.layerwise_lr_decay ** (num_layers - layer_id)
            weight_decay = self.args.weight_decay if name in decay_names else 0.0
            group = groups.setdefault(
                (layer_id, weight_decay),
                {"params": [], "lr": self.args.learning_rate * scale, "weight_decay": weight_decay},
            )
            group["params"].append(param)

        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        optimizer_kwargs.pop("lr", None)
        self.optimizer = optimizer_cls(list(groups.values()), **optimizer_kwargs)  # ok: MLS302, MLS303, MLS304, MLS305
        logger.info("Optimizer %s with %d parameter groups", optimizer_cls.__name__, len(groups))
        return self.optimizer

    # ------------------------------------------------------------------ #
    # Data
    # ------------------------------------------------------------------ #
    def get_train_dataloader(self) -> DataLoader:
        if self.train_dataset is None:
            raise ValueError("VariantTrainer: training requires a train_dataset.")
        num_workers = self.args.dataloader_num_workers
        loader = DataLoader(
            self.train_dataset,
            batch_size=self._train_batch_size,
            sampler=RandomSampler(self.train_dataset),
            collate_fn=self.data_collator,
            num_workers=num_workers,
            pin_memory=self.args.dataloader_pin_memory,
            drop_last=self.args.dataloader_drop_last,
            worker_init_fn=seed_worker if num_workers > 0 else None,
            persistent_workers=self.args.dataloader_persistent_workers and num_workers > 0,
        )
        return self.accelerator.prepare(loader)

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        train_collator = self.data_collator
        self.data_collator = self.eval_data_collator or train_collator
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    # ------------------------------------------------------------------ #
    # Loss
    # ------------------------------------------------------------------ #
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        scores = inputs.pop("scores")
        labels = inputs.pop("labels")
        inputs.pop("protein_idx", None)
        outputs = model(**inputs)
        preds = outputs.predictions.float()
        logits = outputs.logits.float()

        loss = preds.new_zeros(())
        reg_mask = torch.isfinite(scores)
        if reg_mask.any():
            reg_loss = F.mse_loss(preds[reg_mask], scores[reg_mask])
            loss = loss + self.regression_weight * reg_loss
        cls_mask = labels >= 0
        if cls_mask.any():
            pos_weight = None
            if self.pos_weight is not None:
                pos_weight = torch.tensor(self.pos_weight, device=logits.device, dtype=logits.dtype)
            cls_loss = F.binary_cross_entropy_with_logits(logits[cls_mask], labels[cls_mask], pos_weight=pos_weight)
            loss = loss + self.classification_weight * cls_loss

        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, *args, **kwargs):
        loss = super().training_step(model, inputs, *args, **kwargs)
        if self.grad_noise_eta > 0:
            self._add_gradient_noise(model)
        return loss

    def _add_gradient_noise(self, model) -> None:
        """Annealed Gaussian gradient noise (Neelakantan et al., 2015)."""
        variance = self.grad_noise_eta / (1 + self.state.global_step) ** self.grad_noise_gamma
        std = math.sqrt(variance)
        for param in model.parameters():
            if param.grad is not None:
                param.grad.add_(torch.randn_like(param.grad) * std)  # ruleid: MLS302

    # ------------------------------------------------------------------ #
    # Evaluation
    # ------------------------------------------------------------------ #
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        scores = inputs["scores"]
        labels = inputs["labels"]
        protein_idx = inputs["protein_idx"]
        with torch.no_grad():
            with self.compute_loss_context_manager():
                loss, outputs = self.compute_loss(model, dict(inputs), return_outputs=True)
        loss = loss.detach().mean()
        if prediction_loss_only:
            return loss, None, None
        predictions = (
            outputs.predictions.detach().float(),
            torch.sigmoid(outputs.logits.detach().float()),
        )
        return loss, predictions, (scores, labels, protein_idx)
