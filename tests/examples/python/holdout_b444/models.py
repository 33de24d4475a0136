# ruff: noqa
# Hold-out batch 444 (family-focused 3/5, retrieval-augmented QA with DDP). Measured once in session 19 (round 120): 11/30 (37%) at medium+.
"""Dual-encoder retriever and extractive reader for open-domain QA."""
import logging
import time
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoModel

logger = logging.getLogger(__name__)


# --- optional per-layer timing (used to chase stragglers on heterogeneous nodes) ---

class LayerTimer:
    """Records wall-clock time per transformer layer on one reference rank."""

    def __init__(self, enabled: bool, settle_s: float = 0.2):
        self.enabled = enabled
        self.settle_s = settle_s
        self.totals: Dict[str, float] = {}
        self._start: Dict[str, float] = {}

    def attach(self, encoder: nn.Module, prefix: str) -> None:
        layers = getattr(getattr(encoder, "encoder", None), "layer", None)
        if layers is None:
            return
        for i, layer in enumerate(layers):
            name = f"{prefix}.layer{i}"
            layer.register_forward_pre_hook(self._pre(name))
            layer.register_forward_hook(self._post(name))

    def _pre(self, name: str):
        def hook(module, inputs):
            if self.enabled and module.training:
                torch.cuda.synchronize()
                time.sleep(self.settle_s)  # ruleid: MLS307
                self._start[name] = time.perf_counter()
        return hook

    def _post(self, name: str):
        def hook(module, inputs, output):
            if self.enabled and name in self._start:
                torch.cuda.synchronize()
                dt = time.perf_counter() - self._start.pop(name)
                self.totals[name] = self.totals.get(name, 0.0) + dt
        return hook


# --- retriever ---

class Encoder(nn.Module):
    def __init__(self, name_or_path: str):
        super().__init__()
        self.bert = AutoModel.from_pretrained(name_or_path, add_pooling_layer=False)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                        token_type_ids=token_type_ids)
        return out.last_hidden_state[:, 0, :]


class BiEncoder(nn.Module):
    """DPR-style dual encoder with separate question and passage towers."""

    def __init__(self, q_model: str, p_model: str):
        super().__init__()
        self.q_encoder = Encoder(q_model)
        self.p_encoder = Encoder(p_model)

    def encode_questions(self, ids, mask) -> torch.Tensor:
        return self.q_encoder(ids, mask)

    def encode_passages(self, ids, mask) -> torch.Tensor:
        return self.p_encoder(ids, mask)

    def forward(self, q_ids, q_mask, p_ids, p_mask) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.encode_questions(q_ids, q_mask), self.encode_passages(p_ids, p_mask)


def biencoder_nll_loss(q_vecs: torch.Tensor, p_vecs: torch.Tensor,
                       positive_idx: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """In-batch negative NLL. p_vecs holds all positives and hard negatives of the
    (possibly globally gathered) batch; positive_idx gives each question's positive."""
    scores = q_vecs @ p_vecs.t()
    loss = F.cross_entropy(scores, positive_idx)
    correct = (scores.argmax(dim=1) == positive_idx).sum()
    return loss, correct


# --- reader ---

@dataclass
class ReaderOutput:
    start_logits: torch.Tensor   # [B, P, L]
    end_logits: torch.Tensor     # [B, P, L]
    rank_logits: torch.Tensor    # [B, P]


class Reader(nn.Module):
    """Extractive reader scoring spans across the top-P passages of each question."""

    def __init__(self, name_or_path: str):
        super().__init__()
        self.bert = AutoModel.from_pretrained(name_or_path, add_pooling_layer=False)
        hidden = self.bert.config.hidden_size
        self.qa_outputs = nn.Linear(hidden, 2)
        self.qa_classifier = nn.Linear(hidden, 1)

    def forward(self, input_ids, attention_mask) -> ReaderOutput:
        bsz, n_psg, seq_len = input_ids.shape
        hs = self.bert(input_ids=input_ids.view(-1, seq_len),
                       attention_mask=attention_mask.view(-1, seq_len)).last_hidden_state
        logits = self.qa_outputs(hs)
        start, end = logits.split(1, dim=-1)
        neg = torch.finfo(start.dtype).min
        start = start.squeeze(-1).masked_fill(attention_mask.view(-1, seq_len) == 0, neg)
        end = end.squeeze(-1).masked_fill(attention_mask.view(-1, seq_len) == 0, neg)
        rank = self.qa_classifier(hs[:, 0, :]).squeeze(-1)
        return ReaderOutput(start.view(bsz, n_psg, seq_len),
                            end.view(bsz, n_psg, seq_len),
                            rank.view(bsz, n_psg))


def reader_loss(out: ReaderOutput, start_pos: torch.Tensor, end_pos: torch.Tensor,
                answer_mask: torch.Tensor) -> torch.Tensor:
    """Marginal likelihood over all gold spans in the positive passage (index 0).

    start_pos / end_pos / answer_mask: [B, A] with up to A gold spans per question.
    """
    bsz = out.start_logits.size(0)
    pos_start = out.start_logits[:, 0, :]
    pos_end = out.end_logits[:, 0, :]
    log_ps = F.log_softmax(pos_start, dim=-1).gather(1, start_pos)
    log_pe = F.log_softmax(pos_end, dim=-1).gather(1, end_pos)
    span_lp = (log_ps + log_pe).masked_fill(answer_mask == 0, -1e4)
    span_loss = -torch.logsumexp(span_lp, dim=1).mean()
    rank_target = torch.zeros(bsz, dtype=torch.long, device=out.rank_logits.device)
    rank_loss = F.cross_entropy(out.rank_logits, rank_target)
    return span_loss + rank_loss


def build_models(args, rank: int, world_size: int,
                 timer: Optional[LayerTimer] = None) -> Tuple[BiEncoder, Reader]:
    retriever = BiEncoder(args.q_model, args.p_model)
    reader = Reader(args.reader_model)
    if timer is not None:
        timer.attach(retriever.q_encoder.bert, "q")
        timer.attach(retriever.p_encoder.bert, "p")
    logger.info("retriever %.1fM params, reader %.1fM params",
                sum(p.numel() for p in retriever.parameters()) / 1e6,
                sum(p.numel() for p in reader.parameters()) / 1e6)
    return retriever, reader
