# ruff: noqa
# Hold-out batch 243 (short files). Measured once in session 8 (round 70): 15/18 (83%) at medium+.
"""Lightning callback that periodically draws DDIM samples from the EMA UNet and logs an image grid."""
import torch
import torchvision
import pytorch_lightning as pl


class SampleGridCallback(pl.Callback):
    def __init__(self, every_n_steps=2000, n_samples=16, ddim_steps=50, seed=1234):
        self.every_n_steps = every_n_steps
        self.n_samples = n_samples
        self.ddim_steps = ddim_steps
        self.seed = seed
        self._cpu_state = None
        self._cuda_states = None

    def on_fit_start(self, trainer, pl_module):
        self._cpu_state = torch.get_rng_state()
        self._cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None

    @torch.no_grad()
    def ddim_sample(self, pl_module, shape):
        device = pl_module.device
        g = torch.Generator(device=device).manual_seed(self.seed)  # ok: MLS301
        x = torch.randn(shape, generator=g, device=device)
        acp = pl_module.alphas_cumprod.to(device)
        ts = torch.linspace(len(acp) - 1, 0, self.ddim_steps, device=device).long()
        for i, t in enumerate(ts):
            a_t = acp[t]
            a_prev = acp[ts[i + 1]] if i + 1 < len(ts) else torch.ones((), device=device)
            eps = pl_module.ema_unet(x, t.expand(shape[0]))
            x0 = ((x - (1 - a_t).sqrt() * eps) / a_t.sqrt()).clamp(-1, 1)
            x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        return x

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step == 0 or step % self.every_n_steps:
            return
        shape = (self.n_samples, pl_module.hparams.channels, pl_module.hparams.image_size,
                 pl_module.hparams.image_size)
        was_training = pl_module.training
        pl_module.eval()
        samples = self.ddim_sample(pl_module, shape)
        if was_training:
            pl_module.train()
        if trainer.is_global_zero:  # ok: MLS308
            grid = torchvision.utils.make_grid((samples + 1) / 2, nrow=4)
            trainer.logger.experiment.add_image("samples/ddim", grid, step)
        # put the global generators back so the training noise stream is unaffected by sampling
        torch.set_rng_state(self._cpu_state)  # ruleid: MLS301
        if self._cuda_states is not None:
            torch.cuda.set_rng_state_all(self._cuda_states)  # ruleid: MLS301
