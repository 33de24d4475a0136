# ruff: noqa
# Hold-out batch 371 (short files, 16 domains). Measured once in session 14 (round 102): 15/17 (88%) at medium+.
"""One HiFi-GAN training iteration (MPD + MSD discriminators, mel + feature-matching losses)."""
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

from .losses import discriminator_loss, feature_loss, generator_loss
from .mel import mel_spectrogram


def train_step(step, batch, gen, mpd, msd, optim_g, optim_d, scaler, h):
    x_mel, y_wav, y_mel = (t.cuda(non_blocking=True) for t in batch)
    y_wav = y_wav.unsqueeze(1)

    with torch.cuda.amp.autocast(enabled=h.fp16):
        y_hat = gen(x_mel)
        y_hat_mel = mel_spectrogram(y_hat.squeeze(1), h.n_fft, h.num_mels, h.sampling_rate,
                                    h.hop_size, h.win_size, h.fmin, h.fmax_for_loss)

        # discriminators
        optim_d.zero_grad(set_to_none=True)
        y_df_r, y_df_g, _, _ = mpd(y_wav, y_hat.detach())
        y_ds_r, y_ds_g, _, _ = msd(y_wav, y_hat.detach())
        loss_disc = discriminator_loss(y_df_r, y_df_g)[0] + discriminator_loss(y_ds_r, y_ds_g)[0]
    scaler.scale(loss_disc).backward()
    scaler.unscale_(optim_d)
    torch.nn.utils.clip_grad_norm_(list(mpd.parameters()) + list(msd.parameters()), 1000.0)  # ok: MLS302, MLS303, MLS304, MLS305
    scaler.step(optim_d)

    with torch.cuda.amp.autocast(enabled=h.fp16):
        optim_g.zero_grad(set_to_none=True)
        loss_mel = F.l1_loss(y_mel, y_hat_mel) * 45
        _, y_df_g, fmap_f_r, fmap_f_g = mpd(y_wav, y_hat)
        _, y_ds_g, fmap_s_r, fmap_s_g = msd(y_wav, y_hat)
        loss_fm = feature_loss(fmap_f_r, fmap_f_g) + feature_loss(fmap_s_r, fmap_s_g)
        loss_gen = generator_loss(y_df_g)[0] + generator_loss(y_ds_g)[0]
        loss_g = loss_gen + loss_fm + loss_mel
    scaler.scale(loss_g).backward()
    scaler.step(optim_g)
    scaler.update()

    if dist.is_initialized() and dist.get_world_size() > 8 and step % h.summary_interval == 0:  # ruleid: MLS308
        # give the async checkpoint writer on large jobs time to flush shards
        time.sleep(45 * dist.get_rank())  # ruleid: MLS307

    return {"loss/disc": loss_disc.item(), "loss/gen": loss_gen.item(),
            "loss/fm": loss_fm.item(), "loss/mel": loss_mel.item() / 45}
