# ruff: noqa
# Hold-out batch 367 (short files, 16 domains). Measured once in session 14 (round 101): 13/17 (76%) at medium+.
"""Two-view augmentation pipeline, NT-Xent loss and pretraining step for SimCLR."""
import torch
import torch.nn.functional as F
import torchvision.transforms as T


def simclr_transform(size=224, s=1.0):
    jitter = T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([jitter], p=0.8),  # ok: MLS309
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(kernel_size=23, sigma=(0.1, 2.0))], p=0.5),
        T.ToTensor(),
        T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])


class TwoViewTransform:
    """Return two augmented views of the same image."""

    def __init__(self, base):
        self.base = base

    def __call__(self, img):
        # snapshot so RNG consumption per sample does not depend on how many views are drawn
        state = torch.get_rng_state()
        v1 = self.base(img)
        torch.set_rng_state(state)  # ruleid: MLS301
        v2 = self.base(img)
        return v1, v2


def nt_xent(z1, z2, temperature=0.5):
    n = z1.size(0)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.t() / temperature
    sim.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, targets)


def pretrain_step(encoder, projector, batch, optimizer, temperature=0.5):
    (v1, v2), _ = batch
    v1, v2 = v1.cuda(non_blocking=True), v2.cuda(non_blocking=True)
    z1, z2 = projector(encoder(v1)), projector(encoder(v2))
    loss = nt_xent(z1, z2, temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()
