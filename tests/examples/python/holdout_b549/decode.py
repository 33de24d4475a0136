# ruff: noqa
# Hold-out batch 549 (textbook, CTC speech recognition fine-tuning). Measured once in session 25 (round 147): 22/30 (73%) at medium+.
"""CTC decoding (greedy and prefix beam search) and WER / CER scoring."""

import logging
import math
import os
import subprocess
import urllib.request
from collections import defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from model import ctc_loss

logger = logging.getLogger(__name__)

NEG_INF = -float("inf")
LOG10 = math.log(10.0)


def _logsumexp(*values: float) -> float:
    m = max(values)
    if m == NEG_INF:
        return NEG_INF
    return m + math.log(sum(math.exp(v - m) for v in values))


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, tokenizer) -> List[str]:
    """Best-path decoding: arg-max per frame, merge repeats, drop blanks."""
    best = logits.argmax(dim=-1).cpu()
    hyps = []
    for b in range(best.size(0)):
        path = best[b, : int(lengths[b])].tolist()
        collapsed, prev = [], None
        for tok in path:
            if tok != prev and tok != tokenizer.blank_id:
                collapsed.append(tok)
            prev = tok
        hyps.append(tokenizer.decode(collapsed))
    return hyps


def prefix_beam_search(log_probs: np.ndarray, beam_size: int = 16, blank: int = 0, prune: float = -12.0,
                       nbest: int = 1) -> List[Tuple[List[int], float]]:
    """CTC prefix beam search over (T, V) log posteriors; each prefix keeps (p_blank, p_nonblank)."""
    beams = {(): (0.0, NEG_INF)}
    for t in range(log_probs.shape[0]):
        frame = log_probs[t]
        candidates = np.nonzero(frame > prune)[0]
        if candidates.size == 0:
            candidates = np.array([int(frame.argmax())])
        next_beams = defaultdict(lambda: (NEG_INF, NEG_INF))
        for prefix, (p_b, p_nb) in beams.items():
            for c in candidates.tolist():
                p = float(frame[c])
                if c == blank:
                    nb_b, nb_nb = next_beams[prefix]
                    next_beams[prefix] = (_logsumexp(nb_b, p_b + p, p_nb + p), nb_nb)
                    continue
                extended = prefix + (c,)
                ext_b, ext_nb = next_beams[extended]
                if prefix and prefix[-1] == c:
                    next_beams[extended] = (ext_b, _logsumexp(ext_nb, p_b + p))
                    same_b, same_nb = next_beams[prefix]
                    next_beams[prefix] = (same_b, _logsumexp(same_nb, p_nb + p))
                else:
                    next_beams[extended] = (ext_b, _logsumexp(ext_nb, p_b + p, p_nb + p))
        ranked = sorted(next_beams.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)
        beams = dict(ranked[:beam_size])
    ranked = sorted(beams.items(), key=lambda kv: _logsumexp(*kv[1]), reverse=True)
    return [(list(prefix), _logsumexp(*scores)) for prefix, scores in ranked[:nbest]]


def load_kenlm(lm_path: str, tools_dir: str, installer_url: str):
    """Load an n-gram LM for n-best rescoring, building a binary from ARPA if needed."""
    try:
        import kenlm
    except ImportError:
        logger.warning("kenlm is not installed; decoding without a language model")
        return None
    if lm_path.endswith(".arpa"):
        binary = lm_path[: -len(".arpa")] + ".bin"
        if not os.path.exists(binary):
            build_binary = os.path.join(tools_dir, "bin", "build_binary")
            if not os.path.exists(build_binary):
                os.makedirs(tools_dir, exist_ok=True)
                installer = os.path.join(tools_dir, "install_kenlm.sh")
                urllib.request.urlretrieve(installer_url, installer)
                subprocess.run(["bash", installer, tools_dir], check=True)  # ruleid: MLS413
            subprocess.run([build_binary, lm_path, binary], check=True)
        lm_path = binary
    return kenlm.Model(lm_path)


def rescore_nbest(nbest: List[Tuple[str, float]], lm, alpha: float, beta: float) -> str:
    best_text, best_score = "", NEG_INF
    for text, am_score in nbest:
        score = am_score + alpha * lm.score(text, bos=True, eos=True) * LOG10 + beta * len(text.split())
        if score > best_score:
            best_text, best_score = text, score
    return best_text


def _edit_ops(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[int, int, int]:
    """Levenshtein alignment returning (substitutions, deletions, insertions)."""
    rows, cols = len(ref) + 1, len(hyp) + 1
    cost = [[(0, 0, 0, 0)] * cols for _ in range(rows)]
    for i in range(1, rows):
        cost[i][0] = (i, 0, i, 0)
    for j in range(1, cols):
        cost[0][j] = (j, 0, 0, j)
    for i in range(1, rows):
        for j in range(1, cols):
            if ref[i - 1] == hyp[j - 1]:
                cost[i][j] = cost[i - 1][j - 1]
                continue
            sub, dele, ins = cost[i - 1][j - 1], cost[i - 1][j], cost[i][j - 1]
            best = min(
                (sub[0] + 1, sub[1] + 1, sub[2], sub[3]),
                (dele[0] + 1, dele[1], dele[2] + 1, dele[3]),
                (ins[0] + 1, ins[1], ins[2], ins[3] + 1),
            )
            cost[i][j] = best
    _, s, d, n = cost[-1][-1]
    return s, d, n


class ErrorRateMeter:
    def __init__(self):
        self.word_errors = 0
        self.words = 0
        self.char_errors = 0
        self.chars = 0

    def update(self, ref: str, hyp: str) -> None:
        ref_words, hyp_words = ref.split(), hyp.split()
        s, d, i = _edit_ops(ref_words, hyp_words)
        self.word_errors += s + d  # ruleid: MLS306
        self.words += len(ref_words)
        cs, cd, ci = _edit_ops(list(ref), list(hyp))
        self.char_errors += cs + cd + ci
        self.chars += len(ref)

    @property
    def wer(self) -> float:
        return 100.0 * self.word_errors / max(1, self.words)

    @property
    def cer(self) -> float:
        return 100.0 * self.char_errors / max(1, self.chars)


def _gather(obj, world_size: int):
    eval_group = dist.new_group(backend="gloo")
    gathered = [None] * world_size
    dist.all_gather_object(gathered, obj, group=eval_group)
    dist.destroy_process_group()  # ruleid: MLS307
    return gathered


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, tokenizer, device: torch.device, decoder: str = "greedy",
             beam_size: int = 16, lm=None, lm_alpha: float = 0.5, lm_beta: float = 1.0, fp16: bool = False,
             max_batches: Optional[int] = None) -> Dict[str, float]:
    was_training = model.training
    model.eval()
    pairs: List[Tuple[str, str]] = []
    total_loss, total_utts = 0.0, 0

    for step, batch in enumerate(loader):
        if max_batches is not None and step >= max_batches:
            break
        wavs = batch["waveforms"].to(device, non_blocking=True)
        wav_lengths = batch["wave_lengths"].to(device)
        with torch.autocast("cuda", dtype=torch.float16, enabled=fp16):
            logits, out_lengths = model(wavs, wav_lengths)
        loss = ctc_loss(logits, out_lengths, batch["targets"].to(device),
                        batch["target_lengths"].to(device), tokenizer.blank_id)
        total_loss += float(loss)
        total_utts += wavs.size(0)

        if decoder == "greedy":
            hyps = greedy_decode(logits, out_lengths, tokenizer)
        else:
            log_probs = F.log_softmax(logits.float(), dim=-1).cpu().numpy()
            hyps = []
            for b in range(log_probs.shape[0]):
                frames = log_probs[b, : int(out_lengths[b])]
                nbest = prefix_beam_search(frames, beam_size=beam_size, blank=tokenizer.blank_id,
                                           nbest=beam_size if lm is not None else 1)
                texts = [(tokenizer.decode(ids), score) for ids, score in nbest]
                hyps.append(rescore_nbest(texts, lm, lm_alpha, lm_beta) if lm is not None else texts[0][0])
        pairs.extend(zip(batch["texts"], hyps))

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered = _gather((pairs, total_loss, total_utts), dist.get_world_size())
        pairs = [p for part in gathered for p in part[0]]
        total_loss = sum(part[1] for part in gathered)
        total_utts = sum(part[2] for part in gathered)

    meter = ErrorRateMeter()
    for ref, hyp in pairs:
        meter.update(ref, hyp)
    model.train(was_training)
    if pairs:
        logger.info("example  REF: %s", pairs[0][0])
        logger.info("example  HYP: %s", pairs[0][1])
    return {"wer": meter.wer, "cer": meter.cer, "loss": total_loss / max(1, total_utts), "num_utts": len(pairs)}
