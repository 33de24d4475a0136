# ruff: noqa
# Hold-out batch 263 (short files). Measured once in session 9 (round 75): 13/18 (72%) at medium+.
"""ESRGAN GAN-stage training with accelerate: perceptual + relativistic adversarial loss, EMA generator."""
import copy
import signal

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed


@torch.no_grad()
def ema_update(ema, model, decay=0.999):
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.mul_(decay).add_(p.detach(), alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train(args, net_g, net_d, perceptual, loader):
    acc = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=args.accum)
    set_seed(args.seed, device_specific=True)  # ok: MLS301
    net_g_ema = copy.deepcopy(net_g).eval().requires_grad_(False)
    opt_g = torch.optim.Adam(net_g.parameters(), lr=1e-4, betas=(0.9, 0.99))
    opt_d = torch.optim.Adam(net_d.parameters(), lr=1e-4, betas=(0.9, 0.99))
    sched_g = torch.optim.lr_scheduler.MultiStepLR(opt_g, [50_000, 100_000, 200_000], gamma=0.5)  # ok: MLS302, MLS303, MLS304, MLS305
    net_g, net_d, opt_g, opt_d, loader = acc.prepare(net_g, net_d, opt_g, opt_d, loader)
    stop = {"now": False}
    signal.signal(signal.SIGUSR1, lambda *_: stop.update(now=True))  # ok: MLS307
    step = 0
    while step < args.total_steps and not stop["now"]:
        for lr_img, hr_img in loader:
            net_d.requires_grad_(False)
            with acc.accumulate(net_g):
                sr = net_g(lr_img)
                real, fake = net_d(hr_img).detach(), net_d(sr)
                adv = F.binary_cross_entropy_with_logits(fake - real.mean(), torch.ones_like(fake))
                loss_g = 0.01 * F.l1_loss(sr, hr_img) + perceptual(sr, hr_img) + 5e-3 * adv
                acc.backward(loss_g)
                opt_g.step()
                opt_g.zero_grad(set_to_none=True)
            net_d.requires_grad_(True)
            with acc.accumulate(net_d):
                real, fake = net_d(hr_img), net_d(sr.detach())
                loss_d = 0.5 * (F.binary_cross_entropy_with_logits(real - fake.mean(), torch.ones_like(real))
                                + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.zeros_like(fake)))
                acc.backward(loss_d)
                if acc.sync_gradients:
                    acc.clip_grad_norm_(net_d.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt_d.step()
                opt_d.zero_grad(set_to_none=True)
            if acc.sync_gradients:
                sched_g.step()
                ema_update(net_g_ema, acc.unwrap_model(net_g))
                step += 1
            if acc.is_main_process and (step % args.save_every == 0 or stop["now"]):  # ok: MLS307
                acc.save(acc.unwrap_model(net_g_ema).state_dict(), f"{args.out}/net_g_ema_{step}.pth")
            if step >= args.total_steps or stop["now"]:
                break
    acc.wait_for_everyone()  # ok: MLS307
    if acc.is_main_process:
        acc.print(f"finished at step {step}")
    return net_g_ema
