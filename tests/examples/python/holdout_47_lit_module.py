# ruff: noqa
# Hold-out batch 47 (benchmark format, fair varied set; by a helper that never saw mlscan's code). Measured once after round 20: 10/16 (62%) at medium+, one benign line flagged (fixed).
"""LightningModule for image classification with SAM optimizer, mixup and EMA evaluation."""
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from safetensors.torch import load_file


class SAM(torch.optim.Optimizer):
    def __init__(self, params, base_cls=torch.optim.SGD, rho=0.05, **kw):
        super().__init__(params, dict(rho=rho, **kw))
        self.base = base_cls(self.param_groups, **kw)
        self.param_groups = self.base.param_groups

    @torch.no_grad()
    def step(self, closure):
        norm = torch.norm(torch.stack([p.grad.norm() for g in self.param_groups for p in g["params"] if p.grad is not None]))
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                e = p.grad * (g["rho"] / (norm + 1e-12))
                p.add_(e)  # ok: MLS302, MLS303, MLS304, MLS305
                self.state[p]["e"] = e
        with torch.enable_grad():
            closure()
        for g in self.param_groups:
            for p in g["params"]:
                if "e" in self.state[p]:
                    p.sub_(self.state[p]["e"])  # ok: MLS302, MLS303, MLS304, MLS305
        self.base.step()


class Classifier(pl.LightningModule):
    def __init__(self, backbone, num_classes, lr=0.05, mix_alpha=0.2, pretrained=None):
        super().__init__()
        self.net, self.num_classes, self.lr, self.alpha = backbone, num_classes, lr, mix_alpha
        if pretrained:
            self.net.load_state_dict(load_file(pretrained), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.automatic_optimization = False
        self._init_head()

    def _init_head(self):
        head = self.net.fc
        torch.nn.init.zeros_(head.bias)  # ok: MLS302, MLS303, MLS304, MLS305
        torch.nn.init.trunc_normal_(head.weight, std=0.02)  # ok: MLS302, MLS303, MLS304, MLS305

    def training_step(self, batch, batch_idx):
        x, y = batch
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample().item()
        perm = torch.randperm(x.size(0), device=x.device)
        x = lam * x + (1 - lam) * x[perm]  # ok: MLS309
        opt = self.optimizers()

        def closure():
            out = self.net(x)
            loss = lam * F.cross_entropy(out, y) + (1 - lam) * F.cross_entropy(out, y[perm])
            opt.zero_grad(); self.manual_backward(loss)
            return loss

        loss = closure()
        opt.step(closure=closure)
        self.log("train_loss", loss, prog_bar=True, sync_dist=True)  # ok: MLS306
        return loss

    def configure_optimizers(self):
        return SAM(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)
