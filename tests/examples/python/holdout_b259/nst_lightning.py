# ruff: noqa
# Hold-out batch 259 (short files). Measured once in session 9 (round 74): 13/16 (81%) at medium+.
"""Fast feed-forward neural style transfer (perceptual losses) with PyTorch Lightning."""
import argparse
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms
from transformer_net import TransformerNet


def gram(x):
    b, c, h, w = x.shape
    f = x.reshape(b, c, -1)
    return f @ f.transpose(1, 2) / (c * h * w)

class StyleModule(pl.LightningModule):
    def __init__(self, style_img, lr=1e-3, style_w=1e5):
        super().__init__()
        self.net = TransformerNet()
        self.vgg = models.vgg16(weights=models.VGG16_Weights.DEFAULT).features[:23].eval()
        self.vgg.requires_grad_(False)
        self.taps = (3, 8, 15, 22)
        self.register_buffer("style", style_img)
        self.lr, self.style_w = lr, style_w

    def feats(self, x):
        out = []
        for i, layer in enumerate(self.vgg):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def training_step(self, batch, batch_idx):
        x, _ = batch
        x = x + 0.02 * torch.randn_like(x)
        fy, fx = self.feats(self.net(x)), self.feats(x)
        fs = self.feats(self.style.expand(x.size(0), -1, -1, -1))
        content = F.mse_loss(fy[1], fx[1])
        style = sum(F.mse_loss(gram(a), gram(b)) for a, b in zip(fy, fs))
        loss = content + self.style_w * style
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)  # ok: MLS302, MLS303, MLS304, MLS305
        return [opt], [sched]

class PreviewNoise(pl.Callback):
    """Keeps the input jitter comparable across batches for the preview grid."""
    def on_train_start(self, trainer, pl_module):
        self._snap = torch.get_rng_state()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        torch.set_rng_state(self._snap)  # ruleid: MLS301


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--style", required=True)
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args()
    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(256), transforms.ToTensor()])
    style = tf(datasets.folder.default_loader(args.style)).unsqueeze(0)
    loader = DataLoader(datasets.ImageFolder(args.data, tf), batch_size=8, shuffle=True, num_workers=4)
    trainer = pl.Trainer(max_epochs=4, gradient_clip_val=1.0, callbacks=[PreviewNoise()])  # ok: MLS302, MLS303, MLS304, MLS305
    trainer.fit(StyleModule(style), loader)
