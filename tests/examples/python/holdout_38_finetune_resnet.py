# ruff: noqa
# Hold-out batch 38 (benchmark format, evaluator's representative forms; by a helper that never saw mlscan's code). Measured once after round 15: 15/16 (94%) at medium+.
"""Fine-tune a pretrained ResNet on a custom image folder with PyTorch Lightning."""
import lightning as L
import torch
import torch.nn.functional as F
import torchvision
from torch.utils.data import DataLoader
from torchvision import datasets, transforms


class Classifier(L.LightningModule):
    def __init__(self, num_classes: int, init_ckpt: str | None = None, lr: float = 3e-4):
        super().__init__()
        self.save_hyperparameters()
        self.net = torchvision.models.resnet34(weights=None)
        self.net.fc = torch.nn.Linear(self.net.fc.in_features, num_classes)
        if init_ckpt:
            state = torch.load(init_ckpt, map_location="cpu")  # ruleid: MLS102
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            self.net.load_state_dict(state, strict=False)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=0.1)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        logits = self(x)
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), sync_dist=True)  # ok: MLS306

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=0.05)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.hparams.lr,
                                                    total_steps=self.trainer.estimated_stepping_batches)
        return [opt], [{"scheduler": sched, "interval": "step"}]


def main(root: str, num_classes: int, init_ckpt: str):
    L.seed_everything(17, workers=True)  # ok: MLS301
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor()])
    train = DataLoader(datasets.ImageFolder(f"{root}/train", tf), batch_size=64, shuffle=True, num_workers=8)
    val_tf = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    val = DataLoader(datasets.ImageFolder(f"{root}/val", val_tf), batch_size=128, num_workers=8)
    model = Classifier(num_classes, init_ckpt)
    trainer = L.Trainer(max_epochs=20, precision="16-mixed", gradient_clip_val=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
                        callbacks=[L.pytorch.callbacks.EarlyStopping("val/acc", mode="max", patience=4)])
    trainer.fit(model, train, val)
    trainer.save_checkpoint("resnet34_ft.ckpt")
