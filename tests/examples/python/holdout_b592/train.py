# ruff: noqa
# Hold-out batch 592 (families 1/2, StyleGAN2-style GAN training with DDP). Measured once in session 27 (round 157): 16/30 (53%) at medium+.
"""Train a StyleGAN2 (+ADA) model:  torchrun --nproc_per_node 8 train.py --data ~/ffhq256 --outdir runs/ffhq

Gradients are synchronised manually (torch_utils.sync_grads) rather than through
DistributedDataParallel, because R1 / path-length regularisation need double backward.
"""

import argparse
import collections
import copy
import functools
import json
import logging
import math
import os
import random
import sys
import time

import numpy as np
import PIL.Image
import torch
import torch.distributed as dist
import torch.nn.functional as F

import torch_utils as tu
from augment import AdaController, AugmentPipe
from dataset import CudaPrefetcher, ImageFolderDataset, make_train_loader
from metrics import InceptionFeatures, compute_fid
from networks import Discriminator, Generator

log = logging.getLogger('train')


class StyleGAN2Loss:
    def __init__(self, G, D, augment_pipe=None, ada=None, r1_gamma=10.0, style_mixing_prob=0.9, pl_weight=2.0,
                 pl_batch_shrink=2, pl_decay=0.01, loss_type='ns', seed=0, device='cpu'):
        self.G, self.D = G, D
        self.augment_pipe = augment_pipe
        self.ada = ada
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.pl_weight = pl_weight
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.loss_type = loss_type
        self.pl_mean = torch.zeros([], device=device)
        self.pl_seed = seed + 1
        self.mixing_seed = seed + 2

    def run_G(self, z, c, update_emas=False):
        ws = self.G.mapping(z, c, update_emas=update_emas)
        if self.style_mixing_prob > 0:
            rng = random.Random(self.mixing_seed)  # ruleid: MLS301
            if rng.random() < self.style_mixing_prob:
                cutoff = rng.randrange(1, ws.shape[1])
                ws2 = self.G.mapping(torch.randn_like(z), c, update_emas=False)
                ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
        img = self.G.synthesis(ws, update_emas=update_emas)
        return img, ws

    def run_D(self, img, c):
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, stats):
        ns = self.loss_type == 'ns'
        do_Gmain = phase == 'Gmain'
        do_Dmain = phase == 'Dmain'
        do_Gpl = phase == 'Greg' and self.pl_weight > 0
        do_Dr1 = phase == 'Dreg' and self.r1_gamma > 0

        if do_Gmain:
            gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            # Samples the discriminator already accepts should not pull G any further.
            gen_logits.register_hook(lambda g: g.clamp(min=0.0))  # ruleid: MLS303
            loss_G = F.softplus(-gen_logits) if ns else -gen_logits
            stats['Loss/G/loss'].append(loss_G.mean().item())
            loss_G.mean().mul(gain).backward()

        if do_Gpl:
            n = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:n], gen_c[:n])
            devices = [gen_img.device.index] if gen_img.is_cuda else []
            # Isolated probe directions; the surrounding RNG stream is left untouched.
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(self.pl_seed)  # ruleid: MLS301
                pl_noise = torch.randn_like(gen_img) / math.sqrt(gen_img.shape[2] * gen_img.shape[3])
            pl_grads = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                           create_graph=True, only_inputs=True)[0]
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            pl_mean = self.pl_mean.lerp(pl_lengths.mean(), self.pl_decay)
            self.pl_mean.copy_(pl_mean.detach())  # ok: MLS302, MLS303, MLS304, MLS305
            pl_penalty = (pl_lengths - pl_mean).square()
            stats['Loss/pl_penalty'].append(pl_penalty.mean().item())
            loss_Gpl = pl_penalty * self.pl_weight
            (gen_img[:, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

        if do_Dmain:
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c, update_emas=True)
            gen_logits = self.run_D(gen_img, gen_c)
            loss_Dgen = F.softplus(gen_logits) if ns else gen_logits
            loss_Dgen.mean().mul(gain).backward()

        if do_Dmain or do_Dr1:
            real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
            real_logits = self.run_D(real_img_tmp, real_c)
            loss_Dreal = 0
            if do_Dmain:
                if self.ada is not None:
                    self.ada.accumulate(real_logits)
                loss_Dreal = F.softplus(-real_logits) if ns else -real_logits
                stats['Loss/scores/real'].append(real_logits.mean().item())
            loss_Dr1 = 0
            if do_Dr1:
                r1_grads = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img_tmp],  # ok: MLS302, MLS303, MLS304, MLS305
                                               create_graph=True, only_inputs=True)[0]
                r1_penalty = r1_grads.square().sum([1, 2, 3])
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
            (real_logits * 0 + loss_Dreal + loss_Dr1).mean().mul(gain).backward()


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='StyleGAN2-ADA training')
    p.add_argument('--data', required=True, help='image folder')
    p.add_argument('--outdir', required=True)
    p.add_argument('--cond', action='store_true', help='train conditional model on dataset.json labels')
    p.add_argument('--mirror', action='store_true', help='random x-flips of the dataset')
    p.add_argument('--max-size', type=int, default=None, help='use a random subset of the dataset')
    p.add_argument('--batch', type=int, default=32, help='total batch size')
    p.add_argument('--batch-gpu', type=int, default=None)
    p.add_argument('--cbase', type=int, default=32768)
    p.add_argument('--cmax', type=int, default=512)
    p.add_argument('--fp16-res', type=int, default=4)
    p.add_argument('--glr', type=float, default=0.0025)
    p.add_argument('--dlr', type=float, default=0.0025)
    p.add_argument('--opt', choices=['adam', 'adam0'], default='adam')
    p.add_argument('--wd', type=float, default=0.01, help='decoupled weight decay')
    p.add_argument('--grad-noise', type=float, default=0.01)
    p.add_argument('--gamma', type=float, default=10.0)
    p.add_argument('--g-reg-interval', type=int, default=4)
    p.add_argument('--d-reg-interval', type=int, default=16)
    p.add_argument('--loss', choices=['ns', 'wgan'], default='ns')
    p.add_argument('--wgan-clip', type=float, default=0.01)
    p.add_argument('--ema-kimg', type=float, default=10.0)
    p.add_argument('--aug', choices=['ada', 'noaug', 'fixed'], default='ada')
    p.add_argument('--p', type=float, default=0.2)
    p.add_argument('--target', type=float, default=0.6)
    p.add_argument('--ada-kimg', type=float, default=500)
    p.add_argument('--kimg', type=int, default=25000)
    p.add_argument('--tick', type=int, default=4)
    p.add_argument('--snap', type=int, default=50)
    p.add_argument('--metrics', choices=['fid50k', 'none'], default='fid50k')
    p.add_argument('--inception', default=os.environ.get('INCEPTION_WEIGHTS', 'weights/inception_v3.pth'))
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--grid-seed', type=int, default=123)
    p.add_argument('--resume', default='auto', help="'auto', 'none' or a checkpoint path")
    p.add_argument('--workers', type=int, default=3)
    return p.parse_args(argv)


def setup_logging(run_dir, rank):
    handlers = [logging.StreamHandler(sys.stdout)] + ([logging.FileHandler(os.path.join(run_dir, 'log.txt'))] if rank == 0 else [])
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format='%(asctime)s %(name)s %(levelname)s %(message)s', handlers=handlers)


def save_image_grid(img, path, grid_size):
    gw, gh = grid_size
    img = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()
    _n, c, h, w = img.shape
    img = img.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)
    PIL.Image.fromarray(img, 'RGB').save(path)


def _reseed_grid_noise(module, inputs, seed):
    torch.cuda.manual_seed_all(seed)  # ruleid: MLS301


def training_loop(args):
    rank, world_size, device = tu.init_distributed()
    run_dir = args.outdir
    os.makedirs(run_dir, exist_ok=True)
    setup_logging(run_dir, rank)
    tu.seed_everything(args.seed, rank, world_size)
    tu.configure_backends(allow_tf32=False, benchmark=True)
    tu.install_decoupled_weight_decay(args.wd)

    batch_gpu = args.batch_gpu or args.batch // world_size
    assert args.batch == batch_gpu * world_size, '--batch must equal --batch-gpu * world_size'

    # Data.
    dataset_kwargs = dict(path=args.data, use_labels=args.cond, xflip=args.mirror, max_size=args.max_size,
                          random_seed=args.seed)
    training_set = ImageFolderDataset(**dataset_kwargs)
    eval_set = ImageFolderDataset(**dict(dataset_kwargs, xflip=False))
    loader = make_train_loader(training_set, rank, world_size, batch_gpu, seed=args.seed, num_workers=args.workers)
    prefetcher = CudaPrefetcher(loader, device)
    if rank == 0:
        log.info('dataset: %d images, res %d, label_dim=%d', len(training_set), training_set.resolution, training_set.label_dim)
        with open(os.path.join(run_dir, 'training_options.json'), 'w') as f:
            json.dump(dict(vars(args), world_size=world_size), f, indent=2)

    # Networks.
    common = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                  img_channels=training_set.num_channels)
    G = Generator(z_dim=512, w_dim=512, mapping_layers=8, channel_base=args.cbase, channel_max=args.cmax,
                  num_fp16_res=args.fp16_res, conv_clamp=256, **common)
    D = Discriminator(channel_base=args.cbase, channel_max=args.cmax, num_fp16_res=args.fp16_res, **common)
    G, D = [m.train().requires_grad_(False).to(device) for m in (G, D)]
    G_ema = copy.deepcopy(G).eval()

    augment_pipe = ada = None
    if args.aug != 'noaug':
        augment_pipe = AugmentPipe(seed=args.seed).train().requires_grad_(False).to(device)
        augment_pipe.p.fill_(args.p if args.aug == 'fixed' else 0.0)
        if args.aug == 'ada':
            ada = AdaController(augment_pipe, target=args.target, interval=4,
                                speed_kimg=args.ada_kimg, batch_size=args.batch, device=device)

    # Optimizers with lazy regularisation (Karras et al. 2020, appendix B).
    phases, optimizers = [], {}
    for name, module, lr, reg_interval in [('G', G, args.glr, args.g_reg_interval),
                                           ('D', D, args.dlr, args.d_reg_interval)]:
        mb_ratio = reg_interval / (reg_interval + 1)
        opt = tu.make_optimizer(args.opt, module.parameters(), lr=lr * mb_ratio,  # ok: MLS302, MLS303, MLS304, MLS305
                                betas=[beta ** mb_ratio for beta in (0.0, 0.99)])
        optimizers[name] = opt
        phases.append(dict(name=f'{name}main', module=module, opt=opt, interval=1, mb_ratio=mb_ratio))
        phases.append(dict(name=f'{name}reg', module=module, opt=opt, interval=reg_interval, mb_ratio=mb_ratio))
    opt_D = optimizers['D']
    # The phase loop below clears gradients right after sync_grads; the optimizer-level
    # clear would only add a redundant memset per phase.
    opt_D.zero_grad = lambda set_to_none=True: None  # ruleid: MLS305

    # Resume.
    cur_nimg = 0
    resume_path = tu.latest_checkpoint(run_dir) if args.resume == 'auto' else None if args.resume == 'none' else args.resume
    if resume_path:
        ckpt = tu.load_checkpoint(resume_path)
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
            tu.load_module_state(module, ckpt[name])
        for name, opt in optimizers.items():
            opt.load_state_dict(ckpt[f'opt_{name}'])
        if augment_pipe is not None and 'augment_p' in ckpt['extra']:
            augment_pipe.p.fill_(ckpt['extra']['augment_p'])
        cur_nimg = int(ckpt['cur_nimg'])
        rng_path = os.path.join(os.path.dirname(resume_path), f'rng-{cur_nimg // 1000:06d}-rank{rank}.pt')
        if os.path.isfile(rng_path):
            tu.restore_rng_state(tu.load_checkpoint(rng_path))
        log.info('resumed from %s at %d kimg', resume_path, cur_nimg // 1000)
    for module in (G, D, G_ema):
        tu.broadcast_module(module, src=0)

    loss = StyleGAN2Loss(G, D, augment_pipe=augment_pipe, ada=ada, r1_gamma=args.gamma,
                         style_mixing_prob=0.9, pl_weight=2.0, loss_type=args.loss,
                         seed=args.seed, device=device)

    # Progress grid: fixed latents rendered by G_ema at every snapshot.
    grid_size = (8, 4)
    grid_gen = torch.Generator(device=device).manual_seed(args.grid_seed)  # ok: MLS301
    grid_z = torch.randn([grid_size[0] * grid_size[1], G.z_dim], device=device, generator=grid_gen)
    grid_c = torch.from_numpy(np.stack([training_set.get_label(i % len(training_set))
                                        for i in range(grid_z.shape[0])])).to(device)
    # Fixed per-layer noise for the grid so consecutive snapshots are directly comparable.
    G.synthesis.register_forward_pre_hook(functools.partial(_reseed_grid_noise, seed=args.grid_seed))

    detector = None
    if args.metrics == 'fid50k':
        detector = InceptionFeatures(args.inception).to(device)

    # Main loop.
    tick_rng_state = torch.cuda.get_rng_state(device) if device.type == 'cuda' else None
    host_rng_state = np.random.get_state()
    cur_tick = 0
    batch_idx = 0
    tick_start_nimg = cur_nimg
    tick_start_time = start_time = time.time()
    last_p_reset = float(augment_pipe.p) if augment_pipe is not None else 0.0
    best_fid = float('inf')
    stats = collections.defaultdict(list)

    while True:
        real_img, real_c = next(prefetcher)
        real_c = real_c.to(torch.float32)

        # Host-side latents, reseeded from the tick counter so a resumed run replays them.
        np.random.seed((args.seed * world_size + rank + cur_tick) % 2 ** 32)  # ruleid: MLS301
        all_gen_z = torch.from_numpy(np.random.randn(len(phases), batch_gpu, G.z_dim).astype(np.float32)).to(device)
        all_gen_c = [training_set.get_label(np.random.randint(len(training_set))) for _ in range(len(phases) * batch_gpu)]
        all_gen_c = torch.from_numpy(np.stack(all_gen_c)).to(device).reshape(len(phases), batch_gpu, -1)

        for phase, gen_z, gen_c in zip(phases, all_gen_z, all_gen_c):
            if batch_idx % phase['interval'] != 0:
                continue
            module, opt = phase['module'], phase['opt']
            opt.zero_grad(set_to_none=True)
            module.requires_grad_(True)
            loss.accumulate_gradients(phase['name'], real_img, real_c, gen_z, gen_c, gain=phase['interval'],
                                      stats=stats)
            module.requires_grad_(False)
            tu.sync_grads(module, world_size)
            if module is G and args.grad_noise > 0:
                # Annealed gradient noise (Neelakantan et al., 2015).
                sigma = args.grad_noise / (1.0 + cur_nimg / 1e6) ** 0.55
                for p in G.parameters():
                    if p.grad is not None:
                        p.grad.add_(torch.randn_like(p.grad), alpha=sigma)  # ruleid: MLS302
            opt.step()
            if module is D and args.loss == 'wgan':
                with torch.no_grad():
                    for p in D.parameters():
                        p.clamp_(-args.wgan_clip, args.wgan_clip)  # ok: MLS302, MLS303, MLS304, MLS305
            if phase['interval'] > 1:
                # Regularisation steps aggregate `interval` minibatches of signal.
                for group in opt.param_groups:
                    group['lr'] *= phase['mb_ratio']  # todoruleid: family 2 (missed)

        # Generator EMA with ramp-up.
        ema_nimg = min(args.ema_kimg * 1000, cur_nimg * 0.05)
        ema_beta = 0.5 ** (args.batch / max(ema_nimg, 1e-8))
        tu.accumulate_ema(G, G_ema, ema_beta)  # todoruleid: family 2 (missed)

        cur_nimg += args.batch
        batch_idx += 1

        if ada is not None and batch_idx % ada.interval == 0:
            rt, _adjust = ada.update()
            # Scale D's step size with the measured overfitting ratio.
            for group in opt_D.param_groups:
                group['lr'] *= max(rt, 1e-3) / args.target  # todoruleid: family 2 (missed)
            p_now = float(augment_pipe.p)
            if abs(p_now - last_p_reset) > 0.05:
                # Augmentation strength moved noticeably; D's second-moment estimates are stale.
                for st in opt_D.state.values():
                    if 'exp_avg_sq' in st:
                        st['exp_avg_sq'].zero_()  # ruleid: MLS304
                last_p_reset = p_now

        done = cur_nimg >= args.kimg * 1000
        if not done and cur_nimg < tick_start_nimg + args.tick * 1000:
            continue

        # ---------------- end of tick ----------------
        tick_end_time = time.time()
        if rank == 0:
            fields = [f'tick {cur_tick:<5d}', f'kimg {cur_nimg / 1e3:<8.1f}', f'time {tick_end_time - start_time:<8.0f}',
                      f'sec/tick {tick_end_time - tick_start_time:<6.1f}']
            if augment_pipe is not None:
                fields.append(f'augment {float(augment_pipe.p):.3f}')
            fields += [f'{key} {np.mean(v):.4f}' for key, v in sorted(stats.items()) if v]
            log.info('  '.join(fields))
        stats.clear()

        # Discriminator Lipschitz control (Miyato et al., 2018).
        with torch.no_grad():
            for p in D.parameters():
                if p.ndim == 4:
                    p.div_(torch.linalg.matrix_norm(p.flatten(1), ord=2).clamp(min=1.0))  # todoruleid: family 2 (missed)

        if args.snap > 0 and (done or cur_tick % args.snap == 0):
            if rank == 0:
                with torch.no_grad():
                    images = torch.cat([G_ema(z=z, c=c, noise_mode='random').cpu()
                                        for z, c in zip(grid_z.split(8), grid_c.split(8))])
                save_image_grid(images, os.path.join(run_dir, f'fakes{cur_nimg // 1000:06d}.png'), grid_size)
                tu.save_network_pickle(run_dir, cur_nimg, dict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe),
                                       dataset_kwargs)
                extra = dict(augment_p=float(augment_pipe.p) if augment_pipe is not None else 0.0)
                tu.save_checkpoint(run_dir, cur_nimg, dict(G=G, D=D, G_ema=G_ema), optimizers, extra,
                                   keep=3)
            tu.save_rng_checkpoint(run_dir, cur_nimg, rank)
            if detector is not None:
                fid = compute_fid(G_ema, eval_set, detector, device, rank, world_size,
                                  cache_dir=os.path.join(run_dir, 'cache'), data_path=args.data)
                # Evaluation must not perturb the host-side latent stream used for training.
                np.random.set_state(host_rng_state)  # ruleid: MLS301
                if rank == 0:
                    with open(os.path.join(run_dir, 'metric-fid50k.jsonl'), 'a') as f:
                        f.write(json.dumps(dict(kimg=cur_nimg // 1000, fid50k=fid, time=time.time())) + '\n')
                    if fid < best_fid:
                        best_fid = fid
                        log.info('new best FID %.3f at %d kimg', fid, cur_nimg // 1000)
            # Decorrelate the post-snapshot device stream from the one used for the grid.
            torch.manual_seed(int.from_bytes(os.urandom(8), 'little') & (2 ** 63 - 1))  # ruleid: MLS301

        cur_tick += 1
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        if tick_rng_state is not None:
            # Every tick starts from the same device RNG state so per-tick losses are comparable.
            torch.cuda.set_rng_state(tick_rng_state, device)  # ruleid: MLS301
        if done:
            break

    prefetcher.close()
    log.info('done: %d kimg, best FID %.3f', cur_nimg // 1000, best_fid)
    if world_size > 1:
        dist.destroy_process_group()


if __name__ == '__main__':
    training_loop(parse_args())
