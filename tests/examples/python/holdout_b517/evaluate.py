# ruff: noqa
# Hold-out batch 517 (textbook, neural machine translation). Measured once in session 23 (round 139): 21/32 (66%) at medium+.
#!/usr/bin/env python3
"""Beam-search decoding, BLEU/chrF scoring and checkpoint averaging."""
import argparse
import collections
import glob
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import sacrebleu
import torch
import torch.nn.functional as F

import data
from model import TransformerModel

logger = logging.getLogger("nmt.evaluate")

MOSES_SETUP_URL = "https://raw.githubusercontent.com/nmt-tools/setup/main/install_moses_scripts.sh"
DETOKENIZER = "scripts/tokenizer/detokenizer.perl"


def epoch_checkpoints(save_dir):
    """checkpoint{epoch}.pt files in ``save_dir``, newest epoch first."""
    found = []
    for path in glob.glob(os.path.join(save_dir, "checkpoint*.pt")):
        m = re.search(r"checkpoint(\d+)\.pt$", path)
        if m:
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found, reverse=True)]


def last_n_checkpoints(save_dir, n):
    paths = epoch_checkpoints(save_dir)
    if len(paths) < n:
        raise RuntimeError("found {} epoch checkpoints, need {}".format(len(paths), n))
    return paths[:n]


def average_checkpoints(paths):
    """Average the model parameters of several checkpoints (fairseq style)."""
    first = torch.load(paths[0], map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    new_state = first
    params_dict = collections.OrderedDict((k, v.clone().double()) for k, v in first["model"].items())  # todoruleid: family 2 (missed)
    for fpath in paths:
        state = torch.load(fpath, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        model_params = state["model"]
        if set(model_params) != set(params_dict):
            raise KeyError("checkpoint {} has mismatched keys".format(fpath))
        for k, p in model_params.items():
            params_dict[k].add_(p.double())
    averaged = collections.OrderedDict()
    for k, v in params_dict.items():
        averaged[k] = v.div_(len(paths)).to(first["model"][k].dtype)
    new_state["model"] = averaged
    return new_state


def load_model(path, average_last=0, device="cuda"):
    if average_last > 0:
        state = average_checkpoints(last_n_checkpoints(path, average_last))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    args = argparse.Namespace(**state["args"])
    src_dict = data.Dictionary.load(os.path.join(args.data, "dict.{}.txt".format(args.source_lang)))
    tgt_dict = data.Dictionary.load(os.path.join(args.data, "dict.{}.txt".format(args.target_lang)))
    model = TransformerModel.build_model(args, src_dict, tgt_dict)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), args, src_dict, tgt_dict


@torch.no_grad()
def beam_search(model, src_tokens, beam, eos, pad, max_len_a=1.2, max_len_b=10, lenpen=1.0):
    """Plain batched beam search (no incremental state; recomputes the decoder each step)."""
    bsz = src_tokens.size(0)
    enc, enc_mask = model.encode(src_tokens)
    order = torch.arange(bsz, device=src_tokens.device).repeat_interleave(beam)
    enc, enc_mask = enc.index_select(0, order), enc_mask.index_select(0, order)
    src_len = src_tokens.ne(pad).sum(1).max().item()
    max_len = int(max_len_a * src_len + max_len_b)

    tokens = torch.full((bsz * beam, 1), eos, dtype=torch.long, device=src_tokens.device)
    scores = torch.zeros(bsz, beam, device=src_tokens.device)
    scores[:, 1:] = float("-inf")
    finalized = [[] for _ in range(bsz)]
    done = [False] * bsz

    for step in range(max_len + 1):
        logits = model.decode(tokens, enc, enc_mask)[:, -1, :]
        lprobs = F.log_softmax(logits.float(), dim=-1)
        lprobs[:, pad] = float("-inf")
        if step == max_len:
            eos_col = lprobs[:, eos].clone()
            lprobs.fill_(float("-inf"))
            lprobs[:, eos] = eos_col
        vocab = lprobs.size(-1)
        cand = (scores.view(-1, 1) + lprobs).view(bsz, -1)
        top_scores, top_idx = cand.topk(2 * beam, dim=1)
        beam_idx, tok_idx = top_idx // vocab, top_idx % vocab

        next_rows, next_toks, next_scores = [], [], []
        for b in range(bsz):
            chosen = []
            for s, bi, ti in zip(top_scores[b].tolist(), beam_idx[b].tolist(), tok_idx[b].tolist()):
                row = b * beam + bi
                if ti == eos:
                    if not done[b] and len(finalized[b]) < beam and s > float("-inf"):
                        hyp = tokens[row, 1:].tolist()
                        finalized[b].append((s / (len(hyp) + 1) ** lenpen, hyp))
                elif len(chosen) < beam:
                    chosen.append((row, ti, s))
            if len(finalized[b]) >= beam:
                done[b] = True
            while len(chosen) < beam:
                chosen.append((b * beam, pad, float("-inf")))
            for row, ti, s in chosen:
                next_rows.append(row)
                next_toks.append(ti)
                next_scores.append(s if not done[b] else float("-inf"))
        if all(done):
            break
        rows, toks = torch.tensor(next_rows, device=tokens.device), torch.tensor(next_toks, device=tokens.device)
        tokens = torch.cat([tokens.index_select(0, rows), toks.unsqueeze(1)], dim=1)
        scores = torch.tensor(next_scores, device=tokens.device).view(bsz, beam)

    return [max(f, key=lambda t: t[0])[1] if f else [] for f in finalized]


def ensure_moses_scripts(moses_dir):
    if os.path.exists(os.path.join(moses_dir, DETOKENIZER)):
        return
    logger.info("moses scripts not found, installing into %s", moses_dir)
    cmd = "curl -fsSL {} | bash -s -- {}".format(MOSES_SETUP_URL, moses_dir)
    subprocess.run(cmd, shell=True, check=True)  # ruleid: MLS413


def detokenize(lines, lang, moses_dir):
    if moses_dir is None:
        return lines
    ensure_moses_scripts(moses_dir)
    proc = subprocess.run(
        ["perl", os.path.join(moses_dir, DETOKENIZER), "-q", "-l", lang],
        input="\n".join(lines) + "\n", capture_output=True, text=True, check=True,
    )
    return proc.stdout.rstrip("\n").split("\n")


@torch.no_grad()
def translate_dataset(model, dataset, tgt_dict, args, max_tokens=8000, max_sentences=None):
    device, was_training = next(model.parameters()).device, model.training
    model.eval()
    sampler = data.DistributedBucketSampler(dataset, max_tokens, max_sentences, shuffle=False)
    hyps, refs = {}, {}
    for batch_ids in sampler:
        sample = dataset.collater([dataset[i] for i in batch_ids])
        src = sample["net_input"]["src_tokens"].to(device)
        outputs = beam_search(model, src, args.beam, tgt_dict.eos(), tgt_dict.pad(), lenpen=args.lenpen,
                              max_len_a=getattr(args, "max_len_a", 1.2), max_len_b=getattr(args, "max_len_b", 10))
        for i, sid in enumerate(sample["id"].tolist()):
            hyps[sid] = tgt_dict.string(torch.tensor(outputs[i], dtype=torch.long), bpe_symbol="@@ ")
            refs[sid] = tgt_dict.string(sample["target"][i], bpe_symbol="@@ ")
    model.train(was_training)
    order = sorted(hyps)
    return [hyps[i] for i in order], [refs[i] for i in order]


def score_translations(hyps, refs):
    # sacrebleu's chrF chokes on empty lines
    hyps = [h if h.strip() else r for h, r in zip(hyps, refs)]  # ruleid: MLS306
    bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize="13a")
    chrf = sacrebleu.corpus_chrf(hyps, [refs])
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "bleu_signature": str(bleu)}


def get_parser():
    p = argparse.ArgumentParser(description="Translate and score a test set")
    p.add_argument("--path", required=True, help="checkpoint file, or save dir with --average-last")
    p.add_argument("--average-last", type=int, default=0)
    p.add_argument("--data", default=None, help="override data dir stored in the checkpoint")
    p.add_argument("--gen-subset", default="test")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--lenpen", type=float, default=0.6)
    p.add_argument("--max-len-a", type=float, default=1.2)
    p.add_argument("--max-len-b", type=int, default=10)
    p.add_argument("--max-tokens", type=int, default=8000)
    p.add_argument("--moses-dir", default=None, help="detokenize with moses before scoring")
    p.add_argument("--results-path", default=None)
    return p


def main():
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        level=logging.INFO, stream=sys.stdout)
    eval_args = get_parser().parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, train_args, src_dict, tgt_dict = load_model(eval_args.path, eval_args.average_last, device)
    dataset = data.load_langpair_dataset(
        eval_args.data or train_args.data, eval_args.gen_subset, train_args.source_lang,
        train_args.target_lang, src_dict, tgt_dict, train_args, train=False)
    hyps, refs = translate_dataset(model, dataset, tgt_dict, eval_args, max_tokens=eval_args.max_tokens)
    hyps = detokenize(hyps, train_args.target_lang, eval_args.moses_dir)
    refs = detokenize(refs, train_args.target_lang, eval_args.moses_dir)
    results = score_translations(hyps, refs)
    logger.info("%s | BLEU %.2f | chrF %.2f", eval_args.gen_subset, results["bleu"], results["chrf"])
    logger.info(results["bleu_signature"])
    if eval_args.results_path:
        os.makedirs(eval_args.results_path, exist_ok=True)
        out = os.path.join(eval_args.results_path, eval_args.gen_subset)
        Path(out + ".hyp").write_text("\n".join(hyps) + "\n")
        Path(out + ".scores.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
