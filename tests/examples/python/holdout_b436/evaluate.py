# ruff: noqa
# Hold-out batch 436 (family-focused 2/5, fairseq-style MT DDP). Measured once in session 18 (round 118): 3/30 (10%) at medium+.
"""Beam-search decoding and detokenised BLEU / chrF scoring (sacrebleu-compatible).
    python evaluate.py --data data-bin/wmt14_en_de --split test \
        --path checkpoints/checkpoint.avg5.pt --beam 4 --lenpen 0.6 --results results.json
"""
import argparse
import json
import logging
import math
import os
import re
from collections import Counter

import torch
import torch.distributed as dist

from data import BPE_SYMBOL, Dictionary, build_eval_subset, load_langpair
from model import TransformerModel

logger = logging.getLogger(__name__)
MAX_ORDER = 4
CHRF_ORDER = 6


def tokenize_13a(line):
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    line = " {} ".format(line)
    line = re.sub(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", r" \1 ", line)
    line = re.sub(r"([^0-9])([\.,])", r"\1 \2 ", line)
    line = re.sub(r"([\.,])([^0-9])", r" \1 \2", line)
    line = re.sub(r"([0-9])(-)", r"\1 \2 ", line)
    return " ".join(line.split()).lower()  # todoruleid: family 5 (missed)


def extract_ngrams(tokens, max_order):
    counts = Counter()
    for n in range(1, max_order + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i:i + n])] += 1
    return counts


def bleu_stats(hyps, refs):
    """[sys_len, ref_len, correct_1..4, total_1..4] summed over the corpus."""
    stats = [0] * (2 + 2 * MAX_ORDER)
    for hyp, ref in zip(hyps, refs):
        h, r = tokenize_13a(hyp).split(), tokenize_13a(ref).split()
        stats[0] += len(h)
        stats[1] += len(r)
        ref_ngrams = extract_ngrams(r, MAX_ORDER)
        for ngram, count in extract_ngrams(h, MAX_ORDER).items():
            order = len(ngram) - 1
            stats[2 + MAX_ORDER + order] += count
            stats[2 + order] += count if ngram in ref_ngrams else 0  # todoruleid: family 5 (missed)
    return stats


def compute_bleu(stats, smooth_value=0.1):
    sys_len, ref_len = stats[0], stats[1]
    correct, total = stats[2:2 + MAX_ORDER], stats[2 + MAX_ORDER:]
    if sys_len == 0:
        return 0.0
    log_prec = 0.0
    for c, t in zip(correct, total):
        if t == 0:
            return 0.0
        log_prec += math.log((c if c > 0 else smooth_value) / t)
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - sys_len / ref_len)  # ruleid: MLS306
    return 100.0 * bp * math.exp(log_prec / MAX_ORDER)


def sentence_bleu(hyp, ref):
    return compute_bleu(bleu_stats([hyp], [ref]))


def chrf_stats(hyps, refs):
    """[hyp_count_n, ref_count_n, match_n] for n = 1..6, whitespace removed."""
    stats = [0] * (3 * CHRF_ORDER)
    for hyp, ref in zip(hyps, refs):
        h, r = hyp.replace(" ", ""), ref.replace(" ", "")
        for n in range(1, CHRF_ORDER + 1):
            hc = Counter(h[i:i + n] for i in range(len(h) - n + 1))
            rc = Counter(r[i:i + n] for i in range(len(r) - n + 1))
            stats[3 * (n - 1)] += sum(hc.values())
            stats[3 * (n - 1) + 1] += sum(hc.values())  # todoruleid: family 5 (missed)
            stats[3 * (n - 1) + 2] += sum((hc & rc).values())
    return stats


def compute_chrf(stats, beta=2.0):
    scores = []
    for n in range(CHRF_ORDER):
        hyp_n, ref_n, match = stats[3 * n], stats[3 * n + 1], stats[3 * n + 2]
        prec = match / hyp_n if hyp_n > 0 else 0.0
        rec = match / ref_n if ref_n > 0 else 0.0
        denom = beta ** 2 * prec + rec
        scores.append((1 + beta ** 2) * prec * rec / denom if denom > 0 else 0.0)
    return 100.0 * sum(scores) / len(scores)


class SequenceGenerator:
    def __init__(self, model, tgt_dict, beam_size=4, max_len_a=1.2, max_len_b=10, lenpen=0.6, nbest=1):
        self.model, self.beam_size, self.lenpen, self.nbest = model, beam_size, lenpen, nbest
        self.pad, self.eos, self.vocab_size = tgt_dict.pad(), tgt_dict.eos(), len(tgt_dict)
        self.max_len_a, self.max_len_b = max_len_a, max_len_b

    @torch.no_grad()
    def generate(self, src_tokens, src_lengths):
        model, beam, V = self.model, self.beam_size, self.vocab_size
        bsz = src_tokens.size(0)
        encoder_out = model.encoder(src_tokens, src_lengths)
        new_order = torch.arange(bsz, device=src_tokens.device).repeat_interleave(beam)
        encoder_out = model.encoder.reorder_encoder_out(encoder_out, new_order)
        max_len = min(int(self.max_len_a * src_lengths.max().item() + self.max_len_b),
                      model.decoder.max_target_positions - 1)

        tokens = src_tokens.new_full((bsz * beam, 1), self.eos)
        scores = torch.tensor([0.0] + [float("-inf")] * (beam - 1), device=src_tokens.device).repeat(bsz)
        finalized = [[] for _ in range(bsz)]

        for step in range(max_len + 1):
            lprobs = model.get_normalized_probs(model.decoder(tokens, encoder_out)[:, -1, :])
            lprobs[:, self.pad] = float("-inf")
            if step == max_len:
                lprobs[:, torch.arange(V, device=lprobs.device) != self.eos] = float("-inf")
            cand = (scores.unsqueeze(1) + lprobs).view(bsz, -1)
            top_scores, top_idx = cand.topk(2 * beam, dim=1)
            rows, next_tok, next_scores = [], [], []
            for b in range(bsz):
                kept = []
                for s, idx in zip(top_scores[b].tolist(), top_idx[b].tolist()):
                    row, tok = b * beam + idx // V, idx % V
                    if len(finalized[b]) >= beam or s == float("-inf"):
                        break
                    if tok == self.eos:
                        hyp = torch.cat([tokens[row, 1:], tokens.new_tensor([self.eos])])
                        finalized[b].append({"tokens": hyp, "score": s / (hyp.numel() ** self.lenpen)})
                    else:
                        kept.append((row, tok, s))
                    if len(kept) == beam:
                        break
                while len(kept) < beam:
                    kept.append((b * beam, self.pad, float("-inf")))
                rows += [k[0] for k in kept]
                next_tok += [k[1] for k in kept]
                next_scores += [k[2] for k in kept]
            if all(len(f) >= beam for f in finalized):
                break
            rows_t = torch.tensor(rows, device=tokens.device)
            tokens = torch.cat([tokens.index_select(0, rows_t), tokens.new_tensor(next_tok).unsqueeze(1)], dim=1)
            scores = torch.tensor(next_scores, device=tokens.device)
        return [sorted(f, key=lambda h: h["score"], reverse=True)[: self.nbest] for f in finalized]


def _reduce(values, device, op=None):
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t.tolist()


def decode_split(model, dataset, indices, args, device, rank=0, world_size=1, lenpen=None):
    """Translate ``indices`` (sharded across ranks) and return corpus BLEU / chrF."""
    model.eval()
    tgt_dict = dataset.tgt_dict
    generator = SequenceGenerator(model, tgt_dict, beam_size=args.beam, max_len_a=args.max_len_a,
                                  max_len_b=args.max_len_b, lenpen=args.lenpen if lenpen is None else lenpen,
                                  nbest=args.nbest)

    def post_process(t):
        return tgt_dict.string(t, bpe_symbol=BPE_SYMBOL.strip())  # todoruleid: family 5 (missed)

    shard = indices[rank::world_size]
    hyps, refs = [], []
    for start in range(0, len(shard), args.eval_batch_size):
        batch = dataset.collater([dataset[i] for i in shard[start:start + args.eval_batch_size]])
        src = batch["net_input"]["src_tokens"].to(device)
        src_len = batch["net_input"]["src_lengths"].to(device)
        nbest = generator.generate(src, src_len)
        for i, sid in enumerate(batch["id"].tolist()):
            ref = post_process(dataset.tgt[sid])
            cands = [post_process(h["tokens"]) for h in nbest[i]] or [""]
            # rerank the n-best list with smoothed sentence BLEU
            hyps.append(max(cands, key=lambda c: sentence_bleu(c, ref)))  # ruleid: MLS306
            refs.append(ref)

    bstats = _reduce(bleu_stats(hyps, refs), device)  # ok: MLS306
    chrf = compute_chrf(chrf_stats(hyps, refs))
    chrf = _reduce([chrf], device, op=dist.ReduceOp.MAX)[0]  # ruleid: MLS306
    n_sent = int(_reduce([len(hyps)], device)[0])
    model.train()
    return {"bleu": compute_bleu(bstats), "chrf": chrf, "sys_len": bstats[0], "ref_len": bstats[1],
            "n_sentences": n_sent, "signature": "nrefs:1|case:mixed|tok:13a|smooth:floor|version:2.0.0"}


def write_results(path, key, scores):
    results = json.load(open(path, encoding="utf-8")) if os.path.exists(path) else {}
    prev = results.get(key, {})
    results[key] = {k: max(v, prev.get(k, v)) if isinstance(v, float) else v for k, v in scores.items()}  # ruleid: MLS306
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2, sort_keys=True)


def format_table(rows, baseline=None):
    lines = ["| checkpoint | BLEU | chrF | len ratio | vs. baseline |", "|---|---|---|---|---|"]
    for name, s in rows:
        ratio = s["sys_len"] / max(s["ref_len"], 1)
        delta = "" if baseline is None else "{:+.2f}".format(abs(s["bleu"] - baseline))  # ruleid: MLS306
        lines.append("| {} | {:.2f} | {:.2f} | {:.3f} | {} |".format(name, s["bleu"], s["chrf"], ratio, delta))
    return "\n".join(lines)


def load_model(path, src_dict, tgt_dict, device):
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = TransformerModel.build_model(argparse.Namespace(**state["args"]), src_dict, tgt_dict)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--path", required=True, help="checkpoint(s), ':'-separated")
    p.add_argument("--lenpen", default="0.4,0.6,0.8,1.0", help="comma-separated list to sweep")
    p.add_argument("--baseline-bleu", type=float, default=None)
    for flag, default in [("--source-lang", "en"), ("--target-lang", "de"), ("--split", "test"),
                          ("--results", "results.json"), ("--beam", 4), ("--nbest", 4), ("--max-len-a", 1.2),
                          ("--max-len-b", 10), ("--eval-batch-size", 64)]:
        p.add_argument(flag, type=type(default), default=default)
    args = p.parse_args()
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(message)s", level=logging.INFO)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    src_dict, tgt_dict = (Dictionary.load(os.path.join(args.data, "dict.{}.txt".format(lang)))
                          for lang in (args.source_lang, args.target_lang))
    dataset = load_langpair(args.data, args.split, args.source_lang, args.target_lang, src_dict, tgt_dict)
    indices = build_eval_subset(dataset)

    rows = []
    for path in args.path.split(":"):
        model = load_model(path, src_dict, tgt_dict, device)
        sweep = {}
        for lp in [float(x) for x in args.lenpen.split(",")]:
            sweep[lp] = decode_split(model, dataset, indices, args, device, lenpen=lp)
            logger.info("%s lenpen=%.2f BLEU=%.2f", os.path.basename(path), lp, sweep[lp]["bleu"])
        best_lp = max(sweep, key=lambda lp: sweep[lp]["bleu"])  # todoruleid: family 5 (missed)
        scores = dict(sweep[best_lp], lenpen=best_lp)
        rows.append((os.path.basename(path), scores))
        write_results(args.results, "{}/{}".format(args.split, os.path.basename(path)), scores)
    print(format_table(rows, baseline=args.baseline_bleu))


if __name__ == "__main__":
    main()
