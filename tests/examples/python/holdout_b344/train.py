# ruff: noqa
# Hold-out batch 344 (families 2/5/6, graph link prediction). Measured once in session 12 (round 95): 9/34 (26%) at medium+.
"""Train a relational GNN link predictor on a knowledge graph / social graph.

    torchrun --nproc_per_node 4 train.py --data data/FB15k-237 --output runs/rgcn_distmult
"""
import argparse
import logging
import math
import os
import random
import time
from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader

import utils
from callbacks import (EarlyStopping, ModelEMA, PlateauDecay, RelationConstraint, SmoothedValue,
                       mine_hard_negatives)
from data import (RelationBalancedSampler, TripleCollator, TripleDataset, build_filter_index,
                  build_message_graph, load_kg, worker_init_fn)
from evaluate import RankingEvaluator, format_metrics, known_tail_mask
from model import LinkPredictor

logger = logging.getLogger("train")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--output", default="runs/default")
    p.add_argument("--run-name", default=None)
    p.add_argument("--features", default=None, help="optional .npy entity feature matrix")
    p.add_argument("--pretrained-emb", default=None, help="path or URL to initial entity embeddings")
    p.add_argument("--max-relations", type=int, default=200)
    # model
    p.add_argument("--dim", type=int, default=200)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--bases", type=int, default=8)
    p.add_argument("--dropout", type=float, default=0.2)
    # optimisation
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--num-negatives", type=int, default=128)
    p.add_argument("--hard-negatives", type=int, default=16)
    p.add_argument("--hard-neg-every", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-5)
    p.add_argument("--n3", type=float, default=1e-3)
    p.add_argument("--clip-norm", type=float, default=1.0)
    p.add_argument("--warmup-steps", type=int, default=1000)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--mixup-alpha", type=float, default=0.0)
    p.add_argument("--rebalance-power", type=float, default=0.5)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--rel-bound", type=float, default=1e-3)
    # evaluation / early stopping
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--eval-batch-size", type=int, default=256)
    p.add_argument("--eval-candidates", type=int, default=1000,
                   help="rank against this many sampled entities (0 = all entities)")
    p.add_argument("--max-rank", type=int, default=1000)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--keep-last", type=int, default=3)
    p.add_argument("--resume", default=None)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--wandb", action="store_true")
    return p.parse_args()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # ok: MLS301
    torch.cuda.manual_seed_all(seed)


def build_loader(args, splits, world_size: int, rank: int) -> DataLoader:
    dataset = TripleDataset(splits.train, splits.num_entities, splits.num_relations,
                            num_negatives=args.num_negatives, seed=args.seed + rank)
    sampler = RelationBalancedSampler(dataset.triples, num_replicas=world_size, rank=rank,
                                      power=args.rebalance_power, seed=args.seed)
    return DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=args.workers,
        collate_fn=TripleCollator(label_smoothing=args.label_smoothing),
        worker_init_fn=worker_init_fn,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=args.workers > 0,
        drop_last=True,
    )


def train_epoch(args, model, inner, graph, features, loader, optimizer, scheduler, ema, constraint,
                filter_index, epoch: int, global_step: int, device, writer) -> Dict[str, float]:
    model.train()
    meter = SmoothedValue()
    loss_sum, n_batches = 0.0, 0
    t0 = time.time()
    for it, batch in enumerate(loader):
        heads = batch["heads"].to(device, non_blocking=True)
        rels = batch["rels"].to(device, non_blocking=True)
        tails = batch["tails"].to(device, non_blocking=True)
        negs = batch["negs"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)

        if args.hard_negatives > 0 and global_step % args.hard_neg_every == 0:
            with torch.no_grad():
                ent = inner.entity_repr(graph, features)
                full = inner.decoder.score_all(ent[heads], inner.decoder.rel_emb(rels), ent)
                true_mask = known_tail_mask(heads, rels, tails, filter_index, ent.size(0), device)
                negs[:, : args.hard_negatives] = mine_hard_negatives(full, tails, args.hard_negatives, true_mask)

        cand = torch.cat([tails.unsqueeze(1), negs], dim=1)
        scores = model(graph, heads, rels, cand, features, mixup_alpha=args.mixup_alpha)
        loss = F.binary_cross_entropy_with_logits(scores, labels)
        if args.n3 > 0:
            ent = inner.encoder(graph, features)
            loss = loss + args.n3 * inner.n3_regularizer(heads, rels, tails, ent)

        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        optimizer.step()
        scheduler.step()
        if args.weight_decay > 0 and inner.encoder.entity_emb is not None:
            with torch.no_grad():
                lr = optimizer.param_groups[0]["lr"]
                inner.encoder.entity_emb.weight.mul_(1.0 - lr * args.weight_decay)  # ok: MLS302, MLS303, MLS304, MLS305
        ema.update(model)
        ema.copy_to(model)  # ruleid: MLS302
        constraint()

        global_step += 1
        value = loss.item()
        loss_sum += value
        n_batches += 1
        smooth = meter.update(value)
        if utils.is_main_process() and it % 50 == 0:
            logger.info("epoch %d it %d loss %.4f (avg %.4f) lr %.2e %.1fs", epoch, it, value, smooth,
                        optimizer.param_groups[0]["lr"], time.time() - t0)
            if writer is not None:
                writer.add_scalar("train/loss", value, global_step)  # ok: MLS306
    return {"loss": loss_sum / max(1, n_batches), "step": global_step}


def main() -> None:
    args = parse_args()
    local_rank = utils.init_distributed()
    rank, world_size = utils.get_rank(), utils.get_world_size()
    device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    utils.setup_logging(args.output, rank)
    seed_everything(args.seed)
    run_name = args.run_name or os.path.basename(os.path.normpath(args.output))
    if rank == 0:
        utils.register_project_path(os.path.dirname(os.path.abspath(__file__)))
        utils.report_run_start(run_name, vars(args))

    splits = load_kg(args.data, args.features, max_relations=args.max_relations)
    known = splits.all_known()
    filter_index = build_filter_index(known, splits.num_relations)
    graph = build_message_graph(known, splits.num_entities, splits.num_relations).to(device)  # todoruleid: family 6 (missed)
    features = splits.entity_features.to(device) if splits.entity_features is not None else None

    model = LinkPredictor(splits.num_entities, splits.num_relations, args.dim, args.layers, args.bases,
                          args.dropout, feature_dim=features.size(1) if features is not None else 0)
    if args.pretrained_emb and model.encoder.entity_emb is not None:
        emb = utils.load_pretrained_embeddings(args.pretrained_emb, os.path.join(args.output, "cache"))
        with torch.no_grad():
            model.encoder.entity_emb.weight.copy_(emb[:, : args.dim])
    model.to(device)
    model.encoder.watch_activations()
    inner = model
    if world_size > 1:
        model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None,
                    find_unused_parameters=False)
        utils.register_bucket_hook(model)
        inner = model.module

    loader = build_loader(args, splits, world_size, rank)
    total_steps = args.epochs * len(loader)
    optimizer = utils.build_optimizer(model, args.lr, max_grad_norm=args.clip_norm)
    scheduler = utils.warmup_cosine(optimizer, args.warmup_steps, total_steps)
    plateau = PlateauDecay(optimizer, scheduler, factor=0.5, patience=3)
    ema = ModelEMA(model, decay=args.ema_decay)
    constraint = RelationConstraint(model, bound=args.rel_bound)
    stopper = EarlyStopping(patience=args.patience)
    evaluator = RankingEvaluator(filter_index, splits.num_entities, splits.num_relations,
                                 batch_size=args.eval_batch_size, num_candidates=args.eval_candidates,
                                 max_rank=args.max_rank)

    start_epoch, global_step = 0, 0
    if args.resume:
        blob = utils.load_checkpoint(args.resume, model, optimizer, scheduler)
        start_epoch, global_step = blob["epoch"] + 1, blob["step"]
        if "early_stopping" in blob.get("extra", {}):
            stopper.load_state_dict(blob["extra"]["early_stopping"])

    writer = utils.make_summary_writer(args.output) if rank == 0 else None
    run = None
    if args.wandb and rank == 0:
        import wandb
        run = wandb.init(project="kg-link-prediction", name=run_name, config=vars(args))

    best_val: Dict[str, float] = {}
    best_test: Dict[str, float] = {}
    for epoch in range(start_epoch, args.epochs):
        loader.sampler.set_epoch(epoch)
        stats = train_epoch(args, model, inner, graph, features, loader, optimizer, scheduler, ema,
                            constraint, filter_index, epoch, global_step, device, writer)
        global_step = stats["step"]

        if (epoch + 1) % args.eval_every != 0 and epoch + 1 != args.epochs:
            continue
        ema.store(model)
        ema.copy_to(model)
        val = evaluator.evaluate(model, graph, splits.valid, features, rank, world_size)
        test = evaluator.evaluate(model, graph, splits.test, features, rank, world_size)
        ema.restore(model)

        logger.info("epoch %d val", epoch, extra={"metrics": {f"val/{k}": v for k, v in val.items()}})
        logger.info("epoch %d val %s | test %s", epoch, format_metrics(val), format_metrics(test))
        if writer is not None:
            for k, v in val.items():
                writer.add_scalar(f"val/{k}", v, global_step)
            writer.add_scalar("train/epoch_loss", stats["loss"], global_step)
        if run is not None:
            run.log({**{f"val/{k}": v for k, v in val.items()}, "train/loss": stats["loss"]}, step=global_step)

        plateau.step(val["mrr"])
        improved = stopper.step(test["mrr"])  # todoruleid: family 5 (missed)
        if improved:
            best_val, best_test = dict(val), dict(test)
        extra = {"early_stopping": stopper.state_dict(), "ema": ema.state_dict()}
        ckpt = os.path.join(args.output, f"epoch_{epoch:04d}.pt")
        utils.save_checkpoint(ckpt, model, optimizer, scheduler, epoch, global_step, val, extra)
        if improved:
            utils.save_checkpoint(os.path.join(args.output, "best.pt"), model, optimizer, scheduler,
                                  epoch, global_step, val, extra)
        utils.cleanup_checkpoints(args.output, keep_last=args.keep_last)
        if stopper.should_stop:
            logger.info("early stopping at epoch %d (best val mrr %.4f)", epoch, best_val.get("mrr", 0.0))
            break

    if rank == 0:
        if run is not None:
            run.summary.update({f"test/{k}": v for k, v in best_val.items()})  # ruleid: MLS306
            run.finish()
        report = {"run": run_name, "val": best_val, "epoch_best": stopper.best}
        report["test"] = {k: math.ceil(v * 100) / 100 for k, v in best_test.items()}  # ruleid: MLS306
        utils.write_json(os.path.join(args.output, "results.json"), report)
        logger.info("final test %s", format_metrics(report["test"]))
        if writer is not None:
            writer.close()
    utils.cleanup_distributed()


if __name__ == "__main__":
    main()
