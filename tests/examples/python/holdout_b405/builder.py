# ruff: noqa
# Hold-out batch 405 (textbook, MoCo v3 contrastive pretraining with DDP). Measured once in session 16 (round 111): 23/30 (77%) at medium+, one benign look-alike flagged.
"""MoCo v3 model: base encoder + projector/predictor and a momentum encoder.

Negatives come either from the other samples in the global batch (all-gathered
across ranks, the MoCo v3 default) or from a MoCo v2 style FIFO queue.
"""
import math
from functools import partial, reduce
from operator import mul

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class MoCo(nn.Module):
    def __init__(self, base_encoder, dim=256, mlp_dim=4096, T=1.0,
                 use_queue=False, queue_size=65536, grad_guard=1e-3):
        """
        dim: feature dimension (default: 256)
        mlp_dim: hidden dimension in MLPs (default: 4096)
        T: softmax temperature (default: 1.0)
        """
        super().__init__()
        self.T = T
        self.use_queue = use_queue

        # build encoders
        self.base_encoder = base_encoder(num_classes=mlp_dim)
        self.momentum_encoder = base_encoder(num_classes=mlp_dim)

        self._build_projector_and_predictor_mlps(dim, mlp_dim)

        for param_b, param_m in zip(self.base_encoder.parameters(),
                                    self.momentum_encoder.parameters()):
            param_m.data.copy_(param_b.data)  # initialize
            param_m.requires_grad = False  # not updated by gradient

        if use_queue:
            self.register_buffer("queue", F.normalize(torch.randn(dim, queue_size), dim=0))
            self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

        if grad_guard and grad_guard > 0:
            self._register_grad_guard(grad_guard)

    def _build_mlp(self, num_layers, input_dim, mlp_dim, output_dim, last_bn=True):
        mlp = []
        for l in range(num_layers):
            dim1 = input_dim if l == 0 else mlp_dim
            dim2 = output_dim if l == num_layers - 1 else mlp_dim

            mlp.append(nn.Linear(dim1, dim2, bias=False))

            if l < num_layers - 1:
                mlp.append(nn.BatchNorm1d(dim2))
                mlp.append(nn.ReLU(inplace=True))
            elif last_bn:
                # follow SimCLR's design: the last BN layer has no affine parameters
                mlp.append(nn.BatchNorm1d(dim2, affine=False))

        return nn.Sequential(*mlp)

    def _build_projector_and_predictor_mlps(self, dim, mlp_dim):
        raise NotImplementedError

    def _register_grad_guard(self, limit):
        # ViT-B/16 occasionally spikes in the first epochs after warmup; bound
        # the per-element gradient of the encoder so one bad batch cannot blow up
        # the trust ratio.
        for p in self.base_encoder.parameters():
            if p.requires_grad:
                p.register_hook(lambda g: torch.nan_to_num(g, nan=0.0).clamp(-limit, limit))  # ruleid: MLS302

    @torch.no_grad()
    def _update_momentum_encoder(self, m):
        """Momentum update of the momentum encoder"""
        for param_b, param_m in zip(self.base_encoder.parameters(),
                                    self.momentum_encoder.parameters()):
            param_m.data = param_m.data * m + param_b.data * (1.0 - m)  # ok: MLS302, MLS303, MLS304, MLS305

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys):
        keys = concat_all_gather(keys)
        batch_size = keys.shape[0]
        ptr = int(self.queue_ptr)
        queue_size = self.queue.shape[1]
        assert queue_size % batch_size == 0, "queue size must be divisible by the global batch"
        self.queue[:, ptr:ptr + batch_size] = keys.T
        self.queue_ptr[0] = (ptr + batch_size) % queue_size

    def contrastive_loss(self, q, k):
        # normalize
        q = F.normalize(q, dim=1)
        k = F.normalize(k, dim=1)

        if self.use_queue:
            l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
            l_neg = torch.einsum("nc,ck->nk", [q, self.queue.clone().detach()])
            logits = torch.cat([l_pos, l_neg], dim=1) / self.T
            labels = torch.zeros(logits.shape[0], dtype=torch.long, device=q.device)
            return nn.functional.cross_entropy(logits, labels) * (2 * self.T)

        # gather all targets
        k = concat_all_gather(k)
        # Einstein sum is more intuitive
        logits = torch.einsum("nc,mc->nm", [q, k]) / self.T
        N = logits.shape[0]  # batch size per GPU
        rank = dist.get_rank() if dist.is_initialized() else 0
        labels = (torch.arange(N, dtype=torch.long) + N * rank).to(q.device)
        return nn.functional.cross_entropy(logits, labels) * (2 * self.T)

    def forward(self, x1, x2, m):
        """
        Input:
            x1: first views of images
            x2: second views of images
            m: moco momentum
        Output:
            loss
        """
        # compute features
        q1 = self.predictor(self.base_encoder(x1))
        q2 = self.predictor(self.base_encoder(x2))

        with torch.no_grad():  # no gradient
            self._update_momentum_encoder(m)  # update the momentum encoder

            # compute momentum features as targets
            k1 = self.momentum_encoder(x1)
            k2 = self.momentum_encoder(x2)

        loss = self.contrastive_loss(q1, k2) + self.contrastive_loss(q2, k1)
        if self.use_queue:
            self._dequeue_and_enqueue(F.normalize(k1, dim=1))
        return loss


class MoCo_ResNet(MoCo):
    def _build_projector_and_predictor_mlps(self, dim, mlp_dim):
        hidden_dim = self.base_encoder.fc.weight.shape[1]
        del self.base_encoder.fc, self.momentum_encoder.fc  # remove original fc layer

        # projectors
        self.base_encoder.fc = self._build_mlp(2, hidden_dim, mlp_dim, dim)
        self.momentum_encoder.fc = self._build_mlp(2, hidden_dim, mlp_dim, dim)

        # predictor
        self.predictor = self._build_mlp(2, dim, mlp_dim, dim, False)


class MoCo_ViT(MoCo):
    def _build_projector_and_predictor_mlps(self, dim, mlp_dim):
        hidden_dim = self.base_encoder.head.weight.shape[1]
        del self.base_encoder.head, self.momentum_encoder.head  # remove original fc layer

        # projectors
        self.base_encoder.head = self._build_mlp(3, hidden_dim, mlp_dim, dim)
        self.momentum_encoder.head = self._build_mlp(3, hidden_dim, mlp_dim, dim)

        # predictor
        self.predictor = self._build_mlp(2, dim, mlp_dim, dim)


def fix_patch_embedding(vit):
    """Random (frozen) patch projection, the MoCo v3 stability trick for ViT."""
    val = math.sqrt(6.0 / float(3 * reduce(mul, vit.patch_embed.patch_size, 1) + vit.embed_dim))
    nn.init.uniform_(vit.patch_embed.proj.weight, -val, val)
    nn.init.zeros_(vit.patch_embed.proj.bias)
    vit.patch_embed.proj.weight.requires_grad = False  # ok: MLS302, MLS303, MLS304, MLS305
    vit.patch_embed.proj.bias.requires_grad = False


def vit_encoder(arch, stop_grad_conv1=True):
    import timm  # optional dependency, only needed for ViT runs

    def factory(num_classes):
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes,
                                  drop_path_rate=0.0)
        if stop_grad_conv1:
            fix_patch_embedding(model)
        return model
    return factory


def build_model(args):
    import torchvision.models as torchvision_models

    common = dict(dim=args.moco_dim, mlp_dim=args.moco_mlp_dim, T=args.moco_t,
                  use_queue=args.use_queue, queue_size=args.queue_size,
                  grad_guard=args.grad_guard)
    if args.arch.startswith("vit"):
        return MoCo_ViT(vit_encoder(args.arch, args.stop_grad_conv1), **common)
    return MoCo_ResNet(partial(torchvision_models.__dict__[args.arch], zero_init_residual=True),
                       **common)


# utils
@torch.no_grad()
def concat_all_gather(tensor):
    """
    Performs all_gather operation on the provided tensors.
    *** Warning ***: torch.distributed.all_gather has no gradient.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return tensor
    tensors_gather = [torch.ones_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(tensors_gather, tensor, async_op=False)
    return torch.cat(tensors_gather, dim=0)
