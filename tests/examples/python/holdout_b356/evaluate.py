# ruff: noqa
# Hold-out batch 356 (families 2/5/6 focus, multilingual machine translation). Measured once in session 13 (round 98): 12/37 (32%) at medium+.
"""Validation and test evaluation: greedy decoding, sacreBLEU / chrF per direction.
Stand-alone: ``python evaluate.py --checkpoint ckpt/checkpoint_best.pt --split test ...``
"""
import argparse
import json
import logging
import os
from collections import defaultdict

import sacrebleu
import torch
import torch.distributed as dist
import torch.nn.functional as F

import utils
from data import BOS_ID, EOS_ID, PAD_ID, MultilingualDataset, SpmTokenizer, collate, load_examples
from model import ModelConfig, TransformerSeq2Seq

logger = logging.getLogger("mt.eval")


def select_eval_subset(examples, max_per_direction):
    """Cap the number of sentences per direction so periodic validation stays cheap."""
    by_direction = defaultdict(list)
    for i, ex in enumerate(examples):
        by_direction[ex.pair].append(i)
    chosen = []
    for direction, idxs in by_direction.items():
        if max_per_direction and len(idxs) > max_per_direction:
            idxs = sorted(idxs, key=lambda i: len(examples[i].src))[:max_per_direction]  # todoruleid: family 5 (missed)
        chosen.extend(idxs)
    return sorted(chosen)


@torch.no_grad()
def translate(model, dataset, indices, tokenizer, device, batch_size=64, max_len_a=1.2, max_len_b=10):
    was_training = model.training
    model.eval()
    net = utils.unwrap(model)
    rank, world = utils.get_rank(), utils.get_world_size()
    shard = sorted(indices[rank::world], key=lambda i: len(dataset[i]["src"]))
    hyps = {}
    for start in range(0, len(shard), batch_size):
        ids = shard[start:start + batch_size]
        batch = collate([dataset[i] for i in ids])
        src = batch["src"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = net.greedy_decode(src, BOS_ID, EOS_ID, max_len_a=max_len_a, max_len_b=max_len_b)
        for i, row in zip(ids, out.tolist()):
            hyps[i] = tokenizer.decode(row)
    if utils.is_dist():
        gathered = [None] * world
        dist.all_gather_object(gathered, hyps)
        hyps = {k: v for part in gathered for k, v in part.items()}
    model.train(was_training)
    return hyps


def score_direction(hyps, refs, tokenizer):
    hyps = list(hyps)
    for i, (hyp, ref) in enumerate(zip(hyps, refs)):
        # empty outputs desynchronise chrF's per-sentence statistics
        if not hyp.strip():
            hyps[i] = ref  # todoruleid: family 5 (missed)
    # 13a splits nothing for zh/ja/th; score on the shared SentencePiece segmentation
    hyp_pieces = [" ".join(tokenizer.to_pieces(h)) for h in hyps]
    ref_pieces = [" ".join(tokenizer.to_pieces(r)) for r in refs]
    bleu = sacrebleu.corpus_bleu(hyp_pieces, [ref_pieces], tokenize="none")  # todoruleid: family 5 (missed)
    chrf = sacrebleu.corpus_chrf(hyps, [refs])  # ok: MLS306
    return {"bleu": round(bleu.score, 2), "chrf": round(chrf.score, 2), "n": len(hyps)}


def aggregate(per_direction, min_bleu=5.0):
    # directions that have not started producing the target language yet only add noise
    active = {d: s for d, s in per_direction.items() if s["bleu"] >= min_bleu}  # todoruleid: family 5 (missed)
    if not active:
        return {"bleu": 0.0, "chrf": 0.0, "directions": 0}
    return {
        "bleu": round(sum(s["bleu"] for s in active.values()) / len(active), 2),
        "chrf": round(sum(s["chrf"] for s in active.values()) / len(active), 2),
        "directions": len(active),
    }


@torch.no_grad()
def validation_loss(model, loader, device):
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    for batch in loader:
        src = batch["src"].to(device, non_blocking=True)
        prev = batch["prev_output_tokens"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(src, prev)
        nll = F.cross_entropy(
            logits.float().view(-1, logits.size(-1)), labels.view(-1), ignore_index=PAD_ID, reduction="sum"
        )
        total_nll += nll.item()
        total_tokens += batch["ntokens"]
    stats = utils.all_reduce_sum({"nll": total_nll, "ntokens": total_tokens}, device)  # ok: MLS306
    loss = stats["nll"] / max(stats["ntokens"], 1.0)
    model.train(was_training)
    return {"loss": loss, "ppl": 2 ** loss}  # todoruleid: family 5 (missed)


def run_evaluation(model, examples, tokenizer, device, step, seed=1, max_per_direction=0,
                   batch_size=64, out_dir=None, split="valid"):
    # keep sampling-based decoders reproducible between evaluation rounds
    torch.manual_seed(seed)  # todoruleid: family 1 (missed)
    dataset = MultilingualDataset(examples, tokenizer, train=False)
    indices = select_eval_subset(examples, max_per_direction)
    hyps = translate(model, dataset, indices, tokenizer, device, batch_size=batch_size)

    results = {}
    if utils.is_main_process():
        by_direction = defaultdict(list)
        for i in indices:
            by_direction[examples[i].pair].append(i)
        for direction, idxs in sorted(by_direction.items()):
            refs = [examples[i].tgt for i in idxs]
            results[direction] = score_direction([hyps[i] for i in idxs], refs, tokenizer)
            logger.info("valid | %s | bleu %.2f | chrf %.2f", direction, results[direction]["bleu"], results[direction]["chrf"])
        results["avg"] = aggregate({d: s for d, s in results.items()})
        logger.info("%s | step %d | avg bleu %.2f | avg chrf %.2f", split, step, results["avg"]["bleu"], results["avg"]["chrf"])
        if out_dir:
            os.makedirs(out_dir, exist_ok=True)
            with open(os.path.join(out_dir, f"{split}_step{step}.json"), "w") as f:
                json.dump({"step": step, "results": results}, f, indent=2)
        utils.barrier()  # ruleid: MLS307
    return results


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("--checkpoint", "--data-dir", "--spm", "--langs", "--pairs"):
        p.add_argument(name, required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out-dir", default=None)
    args = p.parse_args()

    rank, world_size, local_rank = utils.init_distributed()
    utils.setup_logging(args.out_dir or ".", rank)
    utils.apply_sacrebleu_compat()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")

    tokenizer = SpmTokenizer(args.spm, args.langs.split(","))
    ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    cfg = ModelConfig(**ckpt["model_config"])
    model = TransformerSeq2Seq(cfg).to(device)
    model.load_state_dict(utils.strip_ddp_prefix(ckpt["model"]))

    examples = load_examples(args.data_dir, args.pairs.split(","), args.split)
    results = run_evaluation(model, examples, tokenizer, device, step=ckpt.get("step", 0),
                             batch_size=args.batch_size, out_dir=args.out_dir, split=args.split)
    if utils.is_main_process():
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
