# ruff: noqa
# Hold-out batch 61 (benchmark format, adversarial brief, NLP/speech; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 12/19 (63%) at medium+.
"""Label-smoothed cross entropy for seq2seq training and an accelerate-driven update step
with gradient accumulation (losses are summed, gradients normalised by token count)."""
import contextlib

import torch
import torch.nn.functional as F


def label_smoothed_nll_loss(lprobs, target, epsilon, ignore_index=None):
    if target.dim() == lprobs.dim() - 1:
        target = target.unsqueeze(-1)
    nll_loss = -lprobs.gather(dim=-1, index=target)
    smooth_loss = -lprobs.sum(dim=-1, keepdim=True)
    if ignore_index is not None:
        pad_mask = target.eq(ignore_index)
        nll_loss.masked_fill_(pad_mask, 0.0)
        smooth_loss.masked_fill_(pad_mask, 0.0)
    nll_loss, smooth_loss = nll_loss.sum(), smooth_loss.sum()
    eps_i = epsilon / (lprobs.size(-1) - 1)
    loss = (1.0 - epsilon - eps_i) * nll_loss + eps_i * smooth_loss  # ok: MLS309
    return loss, nll_loss


class LabelSmoothedCrossEntropy(torch.nn.Module):
    def __init__(self, padding_idx, eps=0.1, overflow_guard=1e-2):
        super().__init__()
        self.padding_idx, self.eps, self.overflow_guard = padding_idx, eps, overflow_guard

    def forward(self, model, sample):
        logits = model(**sample["net_input"])
        lprobs = F.log_softmax(logits.float(), dim=-1)
        if lprobs.requires_grad:
            # half-precision decoders occasionally push inf/nan back through the softmax
            lprobs.register_hook(lambda g: torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0).clamp(-self.overflow_guard, self.overflow_guard))  # todoruleid: family 2 (missed)
        target = sample["target"].view(-1)
        loss, nll = label_smoothed_nll_loss(lprobs.view(-1, lprobs.size(-1)), target, self.eps, self.padding_idx)
        return loss, nll, target.ne(self.padding_idx).sum()


def train_step(accelerator, model, criterion, optimizer, scheduler, micro_batches, max_norm=0.1):
    model.train()
    optimizer.zero_grad(set_to_none=True)
    sample_size, logging_nll = 0, 0.0
    for i, micro in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        ctx = accelerator.no_sync(model) if not last else contextlib.nullcontext()
        with ctx:
            loss, nll, ntok = criterion(model, micro)
            accelerator.backward(loss)
        sample_size += int(ntok)
        logging_nll += nll.item()
    total = accelerator.reduce(torch.tensor(sample_size, device=accelerator.device), "sum").item()
    for p in model.parameters():
        if p.grad is not None:
            p.grad.mul_(accelerator.num_processes / max(total, 1))  # ok: MLS302, MLS303, MLS304, MLS305
    gnorm = accelerator.clip_grad_norm_(model.parameters(), max_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    scheduler.step()
    return logging_nll / max(sample_size, 1), gnorm
