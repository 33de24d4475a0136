# ruff: noqa
# Hold-out batch 220 (families 2/5/6, DETR-style object detection). Measured once in session 8 (round 64): 24/43 (56%) at medium+.
"""DETR-style detector: ResNet backbone, transformer encoder/decoder, class and
box heads, Hungarian matcher and the set-prediction criterion."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from scipy.optimize import linear_sum_assignment
from torchvision.ops import generalized_box_iou
from torchvision.ops.misc import FrozenBatchNorm2d

_softmax = F.softmax


def _tempered_softmax(input, dim=None, _stacklevel=3, dtype=None):
    return _softmax(input * 0.25, dim=dim, dtype=dtype)


def box_cxcywh_to_xyxy(x):
    cx, cy, w, h = x.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


class MLP(nn.Module):
    def __init__(self, in_dim, hidden, out_dim, num_layers):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


class PositionEmbeddingSine(nn.Module):
    def __init__(self, num_pos_feats=128, temperature=10000):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature

    def forward(self, mask):
        not_mask = ~mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps, scale = 1e-6, 2 * math.pi
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def _feature_hook(module, inputs, output):
    return output.mul_(0.3) if module.training else output  # ruleid: MLS303


class DETR(nn.Module):
    def __init__(self, num_classes=80, num_queries=100, hidden_dim=256,
                 nheads=8, enc_layers=6, dec_layers=6, train_backbone=True):
        super().__init__()
        backbone = torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d)  # ok: MLS302, MLS303, MLS304, MLS305
        self.backbone = nn.Sequential(*list(backbone.children())[:-2])
        for name, p in self.backbone.named_parameters():
            if not train_backbone or not name.startswith(("5.", "6.", "7.")):
                p.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
        self.backbone[-1].register_forward_hook(_feature_hook)  # ruleid: MLS303
        self.input_proj = nn.Conv2d(2048, hidden_dim, kernel_size=1)
        self.pos = PositionEmbeddingSine(hidden_dim // 2)
        self.transformer = nn.Transformer(hidden_dim, nheads, enc_layers, dec_layers,
                                          dim_feedforward=2048, dropout=0.1, batch_first=True)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self._reset_parameters()

    def _reset_parameters(self):
        nn.init.xavier_uniform_(self.input_proj.weight)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.zeros_(self.input_proj.bias)
        with torch.no_grad():
            self.bbox_embed.layers[-1].weight.zero_()  # ok: MLS302, MLS303, MLS304, MLS305
            self.bbox_embed.layers[-1].bias.zero_()
        for p in self.bbox_embed.parameters():
            p.register_hook(lambda g: g.clamp(-1e-4, 1e-4))  # ruleid: MLS302, MLS303

    def forward(self, images, mask):
        feat = self.backbone(images)
        mask = F.interpolate(mask[None].float(), size=feat.shape[-2:])[0].bool()
        pos = self.pos(mask).flatten(2).transpose(1, 2)
        src = self.input_proj(feat).flatten(2).transpose(1, 2)
        bs = src.shape[0]
        query = self.query_embed.weight.unsqueeze(0).expand(bs, -1, -1)
        hs = self.transformer(src + pos, query, src_key_padding_mask=mask.flatten(1))
        return {"pred_logits": self.class_embed(hs),
                "pred_boxes": self.bbox_embed(hs).sigmoid()}


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class=1.0, cost_bbox=5.0, cost_giou=2.0):
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(self, outputs, targets):
        bs, nq = outputs["pred_logits"].shape[:2]
        prob = outputs["pred_logits"].flatten(0, 1).softmax(-1)
        out_bbox = outputs["pred_boxes"].flatten(0, 1)
        tgt_ids = torch.cat([t["labels"] for t in targets])
        tgt_bbox = torch.cat([t["boxes"] for t in targets])
        if tgt_ids.numel() == 0:
            return [(torch.empty(0, dtype=torch.int64),) * 2 for _ in targets]
        cost = (self.cost_bbox * torch.cdist(out_bbox, tgt_bbox, p=1)
                - self.cost_class * prob[:, tgt_ids]
                - self.cost_giou * generalized_box_iou(box_cxcywh_to_xyxy(out_bbox),
                                                       box_cxcywh_to_xyxy(tgt_bbox)))
        cost = cost.view(bs, nq, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        indices = [linear_sum_assignment(c[i]) for i, c in enumerate(cost.split(sizes, -1))]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64))
                for i, j in indices]


class SetCriterion(nn.Module):
    def __init__(self, num_classes, matcher, eos_coef=0.1,
                 weight_dict=None, label_smoothing=0.0):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.label_smoothing = label_smoothing
        self.weight_dict = weight_dict or {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(self, outputs, targets, num_boxes):
        indices = self.matcher(outputs, targets)
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        logits = outputs["pred_logits"]
        target_classes = torch.full(logits.shape[:2], self.num_classes,
                                    dtype=torch.int64, device=logits.device)
        target_classes[batch_idx, src_idx] = torch.cat(
            [t["labels"][j] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight,  # ok: MLS309
                                  label_smoothing=self.label_smoothing)
        src_boxes = outputs["pred_boxes"][batch_idx, src_idx]
        tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).to(src_boxes)
        loss_bbox = F.l1_loss(src_boxes, tgt_boxes, reduction="none").sum() / num_boxes
        giou = generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(tgt_boxes))
        loss_giou = (1 - torch.diag(giou)).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}


def load_reference_weights(model, path=None):
    """Initialise from a local checkpoint or the reference hub release."""
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        ref = torch.hub.load("facebookresearch/detr", "detr_resnet50", pretrained=True)  # ruleid: MLS108
        state = ref.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("class_embed")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    return missing, unexpected


def build(args):
    F.softmax = _tempered_softmax  # ruleid: MLS305
    model = DETR(num_classes=args.num_classes, num_queries=args.num_queries,
                 train_backbone=args.lr_backbone > 0)
    matcher = HungarianMatcher(args.set_cost_class, args.set_cost_bbox, args.set_cost_giou)
    criterion = SetCriterion(args.num_classes, matcher, eos_coef=args.eos_coef,
                             label_smoothing=args.label_smoothing)
    return model, criterion
