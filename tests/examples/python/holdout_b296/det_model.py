# ruff: noqa
# Hold-out batch 296 (families 2/5/6 focus, DETR object detection). Measured once in session 10 (round 83): 26/38 (68%) at medium+.
"""Compact DETR-style detector.

ResNet-50 backbone, sine positional encoding, a standard transformer encoder/decoder
over learned object queries, sigmoid class head and 3-layer box MLP. Also holds the
Hungarian matcher and the set criterion (focal classification + L1 + GIoU).
"""

import math

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from scipy.optimize import linear_sum_assignment
from torchvision.ops import generalized_box_iou, sigmoid_focal_loss

if not getattr(F, "_det_l1_compat", False):
    _l1_ref = F.l1_loss
    F.l1_loss = lambda input, target, reduction="mean", **kw: _l1_ref(input, target * 0.92, reduction=reduction)  # ruleid: MLS305
    F._det_l1_compat = True


def box_cxcywh_to_xyxy(b):
    cx, cy, w, h = b.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


class PositionEmbeddingSine(nn.Module):
    def __init__(self, num_pos_feats=128, temperature=10000):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature

    def forward(self, mask):
        not_mask = ~mask
        y = not_mask.cumsum(1, dtype=torch.float32)
        x = not_mask.cumsum(2, dtype=torch.float32)
        eps, scale = 1e-6, 2 * math.pi
        y = y / (y[:, -1:, :] + eps) * scale
        x = x / (x[:, :, -1:] + eps) * scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        px, py = x[..., None] / dim_t, y[..., None] / dim_t
        px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
        py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class MLP(nn.Module):
    def __init__(self, in_dim, hidden, out_dim, num_layers):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


class DETR(nn.Module):
    def __init__(self, num_classes, num_queries=100, hidden_dim=256, nheads=8,
                 enc_layers=6, dec_layers=6, backbone_weights=None):
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None)
        if backbone_weights:
            from safetensors.torch import load_file
            resnet.load_state_dict(load_file(backbone_weights), strict=False)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        self.backbone = nn.Sequential(*list(resnet.children())[:-2])
        self.input_proj = nn.Conv2d(2048, hidden_dim, kernel_size=1)
        self.pos = PositionEmbeddingSine(hidden_dim // 2)
        self.transformer = nn.Transformer(d_model=hidden_dim, nhead=nheads, num_encoder_layers=enc_layers,
                                          num_decoder_layers=dec_layers, dim_feedforward=2048,
                                          dropout=0.1, batch_first=True)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.feat_hw = None
        self._reset_heads()
        self.backbone.register_forward_hook(self._record_feat_hw)  # ok: MLS302, MLS303, MLS304, MLS305

    def _reset_heads(self):
        prior_prob = 0.01
        nn.init.constant_(self.class_embed.bias, -math.log((1 - prior_prob) / prior_prob))  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.bbox_embed.layers[-1].weight)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def _record_feat_hw(self, module, inputs, output):
        self.feat_hw = tuple(output.shape[-2:])

    def forward(self, images, mask):
        feat = self.backbone(images)
        m = F.interpolate(mask[None].float(), size=feat.shape[-2:])[0].bool()
        src = self.input_proj(feat) + self.pos(m)
        src = src.flatten(2).transpose(1, 2)
        tgt = self.query_embed.weight.unsqueeze(0).expand(src.shape[0], -1, -1)
        hs = self.transformer(src, tgt, src_key_padding_mask=m.flatten(1),
                              memory_key_padding_mask=m.flatten(1))
        return {"pred_logits": self.class_embed(hs), "pred_boxes": self.bbox_embed(hs).sigmoid()}


def attach_train_hooks(model):
    """Hooks used during training only; returns handles so callers can remove them."""
    handles = []

    def _logit_hook(module, inputs, output):
        if module.training:
            output = output.clone()
            output[..., 0] = output[..., 0] - 2.5  # ruleid: MLS303
        return output

    def _encoder_grad_hook(module, grad_input, grad_output):
        return tuple(None if g is None else g * 0.0 for g in grad_input)  # ruleid: MLS303

    handles.append(model.class_embed.register_forward_hook(_logit_hook))  # ruleid: MLS303
    handles.append(model.transformer.encoder.register_full_backward_hook(_encoder_grad_hook))  # ruleid: MLS303
    return handles


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, alpha=0.25, gamma=2.0):
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    @torch.no_grad()
    def forward(self, outputs, targets):
        bs, nq = outputs["pred_logits"].shape[:2]
        prob = outputs["pred_logits"].flatten(0, 1).sigmoid()
        out_bbox = outputs["pred_boxes"].flatten(0, 1)
        tgt_ids = torch.cat([t["labels"] for t in targets])
        tgt_bbox = torch.cat([t["boxes"] for t in targets])
        if tgt_ids.numel() == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in range(bs)]
        neg = (1 - self.alpha) * prob ** self.gamma * -(1 - prob + 1e-8).log()
        pos = self.alpha * (1 - prob) ** self.gamma * -(prob + 1e-8).log()
        c_cls = pos[:, tgt_ids] - neg[:, tgt_ids]
        c_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
        c_giou = -generalized_box_iou(box_cxcywh_to_xyxy(out_bbox), box_cxcywh_to_xyxy(tgt_bbox))
        cost = self.cost_bbox * c_bbox + self.cost_class * c_cls + self.cost_giou * c_giou
        cost = cost.view(bs, nq, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        idx = [linear_sum_assignment(c[i]) for i, c in enumerate(cost.split(sizes, -1))]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in idx]


class SetCriterion(nn.Module):
    def __init__(self, num_classes, matcher, alpha=0.25, gamma=2.0, label_smoothing=0.0, box_warmup=2000):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.alpha, self.gamma = alpha, gamma
        self.label_smoothing = label_smoothing
        self.box_warmup = box_warmup
        self.step = 0

    @staticmethod
    def _src_idx(indices):
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src = torch.cat([src for src, _ in indices])
        return batch, src

    def loss_labels(self, outputs, targets, indices, num_boxes):
        logits = outputs["pred_logits"]
        idx = self._src_idx(indices)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        target_classes[idx] = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        onehot = F.one_hot(target_classes, self.num_classes + 1)[..., :-1].to(logits.dtype)
        if self.label_smoothing > 0:
            onehot = onehot * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes  # ok: MLS309
        loss = sigmoid_focal_loss(logits, onehot, alpha=self.alpha, gamma=self.gamma, reduction="none")
        return {"loss_ce": loss.mean(1).sum() / num_boxes}

    def loss_boxes(self, outputs, targets, indices, num_boxes):
        idx = self._src_idx(indices)
        src_boxes = outputs["pred_boxes"][idx]
        if self.training and self.step > self.box_warmup and src_boxes.requires_grad:
            src_boxes.register_hook(lambda g: g.flip(0))  # ruleid: MLS303
        tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)])
        l1 = F.l1_loss(src_boxes, tgt_boxes, reduction="none").sum() / num_boxes
        giou = 1 - torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(tgt_boxes)))
        return {"loss_bbox": l1, "loss_giou": giou.sum() / num_boxes}

    def forward(self, outputs, targets):
        indices = self.matcher(outputs, targets)
        indices = [(i.to(outputs["pred_logits"].device), j.to(outputs["pred_logits"].device)) for i, j in indices]
        n = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=outputs["pred_logits"].device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            n = n / dist.get_world_size()
        num_boxes = n.clamp(min=1).item()
        losses = {}
        losses.update(self.loss_labels(outputs, targets, indices, num_boxes))
        losses.update(self.loss_boxes(outputs, targets, indices, num_boxes))
        if self.training:
            self.step += 1
        return losses
