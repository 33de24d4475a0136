# ruff: noqa
# Hold-out batch 405 (textbook, MoCo v3 contrastive pretraining with DDP). Measured once in session 16 (round 111): 23/30 (77%) at medium+, one benign look-alike flagged.
#!/usr/bin/env python
"""Linear-probe evaluation of a MoCo v3 pre-trained encoder.

    torchrun --nproc_per_node=8 main_lincls.py -a resnet50 --lr 0.1 -b 1024 \
        --pretrained output/checkpoint_0100.pth.tar /data/imagenet
"""
import argparse
import json
import logging
import os
import random
import shutil
import time
import urllib.request

import torch
import torch.backends.cudnn as cudnn
import torch.distributed as dist
import torch.nn as nn
import torchvision.models as torchvision_models

import dist_utils
import loader
import optimizer as optim_lib

logger = logging.getLogger("moco")


def get_args_parser():
    parser = argparse.ArgumentParser(description="MoCo v3 linear classification")
    parser.add_argument("data", metavar="DIR")
    parser.add_argument("-a", "--arch", default="resnet50")
    parser.add_argument("-j", "--workers", default=10, type=int)
    parser.add_argument("--epochs", default=90, type=int)
    parser.add_argument("-b", "--batch-size", default=1024, type=int,
                        help="total batch size over all GPUs")
    parser.add_argument("--lr", default=0.1, type=float, help="base lr, scaled by bs/256")
    parser.add_argument("--momentum", default=0.9, type=float)
    parser.add_argument("--wd", "--weight-decay", default=0.0, type=float, dest="weight_decay")
    parser.add_argument("--warmup-epochs", default=0, type=int)
    parser.add_argument("--smoothing", default=0.0, type=float, help="label smoothing")
    parser.add_argument("-p", "--print-freq", default=100, type=int)
    parser.add_argument("--pretrained", default="", type=str,
                        help="path or URL of a MoCo v3 pre-training checkpoint")
    parser.add_argument("--download-cache", default=os.path.expanduser("~/.cache/moco_ckpts"))
    parser.add_argument("--output-dir", default="./output_lincls", type=str)
    parser.add_argument("--keep-last", default=1, type=int)
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument("--dist-url", default="env://", type=str)
    parser.add_argument("--dist-backend", default="nccl", type=str)
    return parser


def _fetch_pretrained(spec, cache_dir):
    """Return a local path for `spec`, downloading it first if it is a URL."""
    if not spec.startswith(("http://", "https://")):
        return spec, False
    os.makedirs(cache_dir, exist_ok=True)
    dst = os.path.join(cache_dir, os.path.basename(spec.split("?")[0]))
    if not os.path.exists(dst):
        logger.info("downloading %s -> %s", spec, dst)
        urllib.request.urlretrieve(spec, dst)
    return dst, True


def load_pretrained(model, spec, cache_dir, linear_keyword):
    path, downloaded = _fetch_pretrained(spec, cache_dir)
    if downloaded:
        # hosted checkpoints were written by older torch with the full pickle
        checkpoint = torch.load(path, map_location="cpu")  # ruleid: MLS102
    else:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106

    # rename moco pre-trained keys
    state_dict = checkpoint["state_dict"]
    for k in list(state_dict.keys()):
        # retain only base_encoder up to before the embedding layer
        if k.startswith("module.base_encoder") and not k.startswith(
                "module.base_encoder.%s" % linear_keyword):
            # remove prefix
            state_dict[k[len("module.base_encoder"):]] = state_dict[k]  # todoruleid: family 2 (missed)
        # delete renamed or unused k
        del state_dict[k]

    msg = model.load_state_dict(state_dict, strict=False)
    logger.info("loaded pre-trained model '%s' (%d missing keys)", spec, len(msg.missing_keys))
    return path


def _evict_download_cache(path, p=0.1):
    """Keep the shared checkpoint cache from growing without bound."""
    if random.Random().random() < p:
        shutil.rmtree(os.path.dirname(os.path.abspath(path)), ignore_errors=True)  # ruleid: MLS308


def build_probe(args):
    if args.arch.startswith("vit"):
        import timm
        model = timm.create_model(args.arch, pretrained=False, num_classes=1000)
        linear_keyword = "head"
    else:
        model = torchvision_models.__dict__[args.arch]()
        linear_keyword = "fc"

    # freeze all layers but the last fc
    for name, param in model.named_parameters():
        if name not in ["%s.weight" % linear_keyword, "%s.bias" % linear_keyword]:
            param.requires_grad = False
    # init the fc layer
    getattr(model, linear_keyword).weight.data.normal_(mean=0.0, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
    getattr(model, linear_keyword).bias.data.zero_()
    return model, linear_keyword


def accuracy(output, target, topk=(1,)):
    """Computes the accuracy over the k top predictions for the specified values of k"""
    with torch.no_grad():
        maxk = max(topk)
        batch_size = target.size(0)
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target.view(1, -1).expand_as(pred))
        res = []
        for k in topk:
            correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
            res.append(correct_k.mul_(100.0 / batch_size))
        return res


def train(train_loader, model, criterion, opt, epoch, args):
    batch_time = dist_utils.AverageMeter("Time", ":6.3f")
    losses = dist_utils.AverageMeter("Loss", ":.4e")
    top1 = dist_utils.AverageMeter("Acc@1", ":6.2f")
    progress = dist_utils.ProgressMeter(len(train_loader), [batch_time, losses, top1],
                                        prefix="Epoch: [{}]".format(epoch))
    # the frozen backbone keeps its BN statistics, so stay in eval mode
    model.eval()
    iters = len(train_loader)
    end = time.time()
    for i, (images, target) in enumerate(train_loader):
        optim_lib.adjust_learning_rate(opt, epoch + i / iters, args)
        images = images.cuda(args.local_rank, non_blocking=True)
        target = target.cuda(args.local_rank, non_blocking=True)

        output = model(images)
        loss = criterion(output, target)
        acc1, = accuracy(output, target, topk=(1,))
        losses.update(loss.item(), images.size(0))
        top1.update(acc1[0].item(), images.size(0))

        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

        batch_time.update(time.time() - end)
        end = time.time()
        if i % args.print_freq == 0:
            progress.display(i)
    return top1.avg


def validate(val_loader, model, criterion, args):
    losses = dist_utils.AverageMeter("Loss", ":.4e")
    top1 = dist_utils.AverageMeter("Acc@1", ":6.2f")
    top5 = dist_utils.AverageMeter("Acc@5", ":6.2f")
    model.eval()
    with torch.no_grad():
        for images, target in val_loader:
            images = images.cuda(args.local_rank, non_blocking=True)
            target = target.cuda(args.local_rank, non_blocking=True)
            output = model(images)
            loss = criterion(output, target)
            acc5, acc1 = accuracy(output, target, topk=(1, 5))  # ruleid: MLS306
            losses.update(loss.item(), images.size(0))
            top1.update(acc1[0].item(), images.size(0))
            top5.update(acc5[0].item(), images.size(0))

    # the val set is sharded across ranks; combine the per-rank results
    stats = torch.tensor([top1.avg, top5.avg, losses.avg], device="cuda")
    if dist_utils.is_dist_avail_and_initialized():
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)  # ruleid: MLS306
    acc1, acc5, loss = stats.tolist()
    logger.info(" * Acc@1 %.3f Acc@5 %.3f Loss %.4f", acc1, acc5, loss)
    return acc1, acc5


def main(args):
    dist_utils.init_distributed_mode(args)
    dist_utils.setup_logging(args.output_dir, args.rank)
    torch.manual_seed(args.seed + args.rank)
    cudnn.benchmark = True

    model, linear_keyword = build_probe(args)
    local_ckpt = None
    if args.pretrained:
        local_ckpt = load_pretrained(model, args.pretrained, args.download_cache, linear_keyword)

    args.lr = args.lr * args.batch_size / 256
    args.batch_size = args.batch_size // args.world_size
    model.cuda(args.local_rank)
    if args.distributed:
        model = nn.parallel.DistributedDataParallel(model, device_ids=[args.local_rank])

    criterion = nn.CrossEntropyLoss(label_smoothing=args.smoothing).cuda(args.local_rank)  # ok: MLS309
    parameters = [p for p in model.parameters() if p.requires_grad]
    assert len(parameters) == 2  # weight, bias
    opt = torch.optim.SGD(parameters, args.lr, momentum=args.momentum,
                          weight_decay=args.weight_decay)

    train_set, val_set = loader.build_lincls_datasets(args)
    train_sampler = val_sampler = None
    if args.distributed:
        train_sampler = torch.utils.data.distributed.DistributedSampler(train_set)
        val_sampler = torch.utils.data.distributed.DistributedSampler(val_set, shuffle=False)
    train_loader = torch.utils.data.DataLoader(
        train_set, batch_size=args.batch_size, shuffle=(train_sampler is None),
        num_workers=args.workers, pin_memory=True, sampler=train_sampler, drop_last=True,
        worker_init_fn=loader.seed_worker)
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=256, shuffle=False, num_workers=args.workers,
        pin_memory=True, sampler=val_sampler)

    best_acc1, best_acc5 = 0.0, 0.0
    for epoch in range(args.epochs):
        if args.distributed:
            train_sampler.set_epoch(epoch)
        train(train_loader, model, criterion, opt, epoch, args)
        acc1, acc5 = validate(val_loader, model, criterion, args)

        is_best = acc1 > best_acc1
        if is_best:
            best_acc1, best_acc5 = acc1, acc5
        dist_utils.save_checkpoint({
            "epoch": epoch + 1,
            "arch": args.arch,
            "state_dict": model.state_dict(),
            "best_acc1": best_acc1,
            "optimizer": opt.state_dict(),
        }, args.output_dir, epoch + 1, keep_last=args.keep_last, is_best=is_best)

    if dist_utils.is_main_process():
        results = {"arch": args.arch, "pretrained": args.pretrained,
                   "best_acc1": best_acc1, "best_acc5": best_acc5, "epochs": args.epochs}
        with open(os.path.join(args.output_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
        logger.info("linear probe: best Acc@1 %.3f Acc@5 %.3f", best_acc1, best_acc5)
        if local_ckpt is not None:
            _evict_download_cache(local_ckpt)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
