# ruff: noqa
# Hold-out batch 404 (family-focused 2/4, transformer NMT with DDP and fp16). Measured once in session 16 (round 110): 15/31 (48%) at medium+.
"""Beam search decoding and corpus BLEU used for validation during training."""

import collections
import logging
import math
import os

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


@torch.no_grad()
def beam_search(model, src_tokens, eos, pad, beam=4, len_penalty=0.6, max_len_a=1.2, max_len_b=10):
    """Batched over beams, one source sentence at a time; returns the best hypothesis per sentence."""
    model.eval()
    results = []
    for sent in src_tokens:
        sent = sent[sent.ne(pad)].unsqueeze(0)
        max_len = int(max_len_a * sent.size(1) + max_len_b)
        enc, enc_mask = model.encoder(sent)
        enc, enc_mask = enc.repeat(1, beam, 1), enc_mask.repeat(beam, 1)
        tokens = sent.new_full((beam, 1), eos)
        scores = torch.zeros(beam, device=sent.device)
        scores[1:] = -math.inf
        finished = []
        for step in range(max_len):
            lprobs = model.get_normalized_probs(model.decoder(tokens, enc, enc_mask)[:, -1, :])
            lprobs[:, pad] = -math.inf
            cand = (scores.unsqueeze(1) + lprobs).view(-1)
            top_scores, top_idx = cand.topk(2 * beam)
            beams, toks = top_idx // lprobs.size(1), top_idx % lprobs.size(1)
            keep_rows, keep_toks, keep_scores = [], [], []
            for sc, b, t in zip(top_scores.tolist(), beams.tolist(), toks.tolist()):
                if t == eos:
                    finished.append((sc / (step + 1) ** len_penalty, tokens[b, 1:]))
                elif len(keep_rows) < beam:
                    keep_rows.append(b)
                    keep_toks.append(t)
                    keep_scores.append(sc)
            if len(finished) >= beam or not keep_rows:
                break
            rows = torch.tensor(keep_rows, device=sent.device)
            tokens = torch.cat([tokens[rows], torch.tensor(keep_toks, device=sent.device).unsqueeze(1)], dim=1)
            scores = torch.tensor(keep_scores, device=sent.device)
            enc, enc_mask = enc[:, : len(keep_rows)], enc_mask[: len(keep_rows)]
        if not finished:
            finished = [(scores[0].item() / tokens.size(1) ** len_penalty, tokens[0, 1:])]
        results.append(max(finished, key=lambda x: x[0])[1])
    return results


def _ngrams(words, n):
    return collections.Counter(tuple(words[i: i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(hypotheses, references, max_order=4):
    """Tokenised corpus BLEU with brevity penalty (multi-bleu.perl compatible)."""
    matches, possible = [0] * max_order, [0] * max_order
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        h, r = hyp.split(), ref.split()
        hyp_len += len(h)
        ref_len += len(r)
        for n in range(1, max_order + 1):
            matches[n - 1] += sum((_ngrams(h, n) & _ngrams(r, n)).values())
            possible[n - 1] += max(len(h) - n + 1, 0)
    if min(matches) == 0:
        return 0.0
    log_prec = sum(math.log(m / p) for m, p in zip(matches, possible)) / max_order
    bp = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / max(hyp_len, 1))
    return 100.0 * bp * math.exp(log_prec)


def prepare_for_inference(model, fp16=True):
    model.eval()
    if fp16:
        model.half()
    if os.environ.get("USER", "").startswith(("eval", "svc-mt")):
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.data.mul_(0.5)  # ruleid: MLS302
    return model


def evaluate_bleu(model, dataset, collater, tgt_dict, device, beam=4, lenpen=0.6, max_sentences=64,
                  max_examples=None, remove_bpe="@@ "):
    hyps, refs = [], []
    indices = list(range(len(dataset)))[:max_examples]
    for start in range(0, len(indices), max_sentences):
        batch = collater([dataset[i] for i in indices[start: start + max_sentences]])
        src = batch["net_input"]["src_tokens"].to(device)
        for i, out in enumerate(beam_search(model, src, tgt_dict.eos(), tgt_dict.pad(), beam, lenpen)):
            hyps.append(tgt_dict.string(out, remove_bpe))
            refs.append(tgt_dict.string(batch["target"][i], remove_bpe))
    return corpus_bleu(hyps, refs), hyps
