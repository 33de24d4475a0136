# ruff: noqa
# Hold-out batch 496 (families 3/6, DETR-style COCO detection with DDP). Measured once in session 22 (round 133): 5/30 (17%) at medium+.
"""DETR: ResNet backbone + transformer encoder/decoder, Hungarian matcher and set criterion."""
import math
from typing import Dict

import torch
import torch.nn.functional as F
import torchvision
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d, generalized_box_iou

import dist_utils as utils
from dist_utils import NestedTensor


def box_cxcywh_to_xyxy(x: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = x.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


# backbone + positional encoding
class Backbone(nn.Module):
    def __init__(self, name: str, train_backbone: bool, dilation: bool):
        super().__init__()
        body = getattr(torchvision.models, name)(
            replace_stride_with_dilation=[False, False, dilation],
            weights="IMAGENET1K_V1",
            norm_layer=FrozenBatchNorm2d,
        )
        for pname, p in body.named_parameters():
            if not train_backbone or ("layer2" not in pname and "layer3" not in pname and "layer4" not in pname):
                p.requires_grad_(False)
        self.body = IntermediateLayerGetter(body, return_layers={"layer4": "0"})
        self.num_channels = 512 if name in ("resnet18", "resnet34") else 2048

    def forward(self, x: NestedTensor) -> NestedTensor:
        feat = self.body(x.tensors)["0"]
        mask = F.interpolate(x.mask[None].float(), size=feat.shape[-2:]).to(torch.bool)[0]
        return NestedTensor(feat, mask)


class PositionEmbeddingSine(nn.Module):
    def __init__(self, num_pos_feats: int = 128, temperature: int = 10000, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats, self.temperature, self.scale = num_pos_feats, temperature, scale

    def forward(self, x: NestedTensor) -> torch.Tensor:
        not_mask = ~x.mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        y_embed = y_embed / (y_embed[:, -1:, :] + 1e-6) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + 1e-6) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.tensors.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos = []
        for embed in (y_embed, x_embed):
            p = embed[:, :, :, None] / dim_t
            pos.append(torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=4).flatten(3))
        return torch.cat(pos, dim=3).permute(0, 3, 1, 2)


# transformer
class Transformer(nn.Module):
    """Encoder/decoder on flattened features; returns every decoder layer's output for aux losses."""

    def __init__(self, d_model=256, nhead=8, num_enc=6, num_dec=6, dim_ff=2048, dropout=0.1):
        super().__init__()
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model, nhead, dim_ff, dropout), num_enc)
        self.decoder_layers = nn.ModuleList(nn.TransformerDecoderLayer(d_model, nhead, dim_ff, dropout)
                                            for _ in range(num_dec))
        self.dec_norm = nn.LayerNorm(d_model)
        self.d_model = d_model
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, mask, query_embed, pos_embed):
        bs = src.shape[0]
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        tgt = query_embed.unsqueeze(1).repeat(1, bs, 1)
        mask = mask.flatten(1)
        memory = self.encoder(src + pos_embed, src_key_padding_mask=mask)
        hs = []
        for layer in self.decoder_layers:
            tgt = layer(tgt, memory, memory_key_padding_mask=mask)
            hs.append(self.dec_norm(tgt))
        return torch.stack(hs).transpose(1, 2)  # [L, bs, Q, d]


def mlp(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> nn.Sequential:
    dims = [input_dim] + [hidden_dim] * (num_layers - 1)
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Linear(dims[-1], output_dim))


class DETR(nn.Module):
    def __init__(self, backbone, transformer, num_classes, num_queries, aux_loss=True):
        super().__init__()
        d = transformer.d_model
        self.backbone = backbone
        self.position_embedding = PositionEmbeddingSine(d // 2)
        self.transformer = transformer
        self.class_embed = nn.Linear(d, num_classes + 1)
        self.bbox_embed = mlp(d, d, 4, 3)
        self.query_embed = nn.Embedding(num_queries, d)
        self.input_proj = nn.Conv2d(backbone.num_channels, d, kernel_size=1)
        self.aux_loss = aux_loss

    def forward(self, samples: NestedTensor):
        feat = self.backbone(samples)
        pos = self.position_embedding(feat).to(feat.tensors.dtype)
        src, mask = feat.decompose()
        hs = self.transformer(self.input_proj(src), mask, self.query_embed.weight, pos)
        outputs_class = self.class_embed(hs)
        outputs_coord = self.bbox_embed(hs).sigmoid()
        out = {"pred_logits": outputs_class[-1], "pred_boxes": outputs_coord[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b}
                                  for a, b in zip(outputs_class[:-1], outputs_coord[:-1])]
        return out


# matcher + criterion
class HungarianMatcher(nn.Module):
    def __init__(self, cost_class: float = 1, cost_bbox: float = 5, cost_giou: float = 2):
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        assert cost_class != 0 or cost_bbox != 0 or cost_giou != 0, "all costs can't be 0"

    @torch.no_grad()
    def forward(self, outputs, targets):
        bs, num_queries = outputs["pred_logits"].shape[:2]
        out_prob = outputs["pred_logits"].flatten(0, 1).softmax(-1)
        out_bbox = outputs["pred_boxes"].flatten(0, 1)
        tgt_ids = torch.cat([v["labels"] for v in targets])
        tgt_bbox = torch.cat([v["boxes"] for v in targets])
        if tgt_ids.numel() == 0:
            empty = torch.as_tensor([], dtype=torch.int64)
            return [(empty, empty) for _ in range(bs)]

        cost_class = -out_prob[:, tgt_ids]
        cost_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(out_bbox), box_cxcywh_to_xyxy(tgt_bbox))
        C = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        C = C.view(bs, num_queries, -1).cpu()
        sizes = [len(v["boxes"]) for v in targets]
        indices = [linear_sum_assignment(c[i]) for i, c in enumerate(C.split(sizes, -1))]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]


class SetCriterion(nn.Module):
    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: Dict[str, float], eos_coef: float):
        super().__init__()
        self.num_classes, self.matcher, self.weight_dict = num_classes, matcher, weight_dict
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    @staticmethod
    def _src_permutation_idx(indices):
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        return batch_idx, src_idx

    def _losses(self, outputs, targets, indices, num_boxes):
        idx = self._src_permutation_idx(indices)
        src_logits = outputs["pred_logits"]
        target_classes = torch.full(src_logits.shape[:2], self.num_classes, dtype=torch.int64,
                                    device=src_logits.device)
        target_classes[idx] = torch.cat([t["labels"][J] for t, (_, J) in zip(targets, indices)])
        loss_ce = F.cross_entropy(src_logits.transpose(1, 2), target_classes, self.empty_weight)

        src_boxes = outputs["pred_boxes"][idx]
        target_boxes = torch.cat([t["boxes"][J] for t, (_, J) in zip(targets, indices)], dim=0)
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="sum") / num_boxes
        giou = generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes))
        loss_giou = (1 - torch.diag(giou)).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def forward(self, outputs, targets):
        outputs_main = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        indices = self.matcher(outputs_main, targets)
        device = outputs["pred_logits"].device
        num_boxes = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if utils.is_dist_avail_and_initialized():
            torch.distributed.all_reduce(num_boxes)
        num_boxes = torch.clamp(num_boxes / utils.get_world_size(), min=1).item()

        losses = self._losses(outputs, targets, indices, num_boxes)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            l_dict = self._losses(aux, targets, self.matcher(aux, targets), num_boxes)
            losses.update({f"{k}_{i}": v for k, v in l_dict.items()})
        return losses


class PostProcess(nn.Module):
    """Convert model output to COCO api format (absolute xyxy boxes in original image size)."""

    @torch.no_grad()
    def forward(self, outputs, target_sizes):
        out_logits, out_bbox = outputs["pred_logits"], outputs["pred_boxes"]
        prob = F.softmax(out_logits, -1)
        scores, labels = prob[..., :-1].max(-1)
        boxes = box_cxcywh_to_xyxy(out_bbox)
        img_h, img_w = target_sizes.unbind(1)
        scale_fct = torch.stack([img_w, img_h, img_w, img_h], dim=1)
        boxes = boxes * scale_fct[:, None, :]
        return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(scores, labels, boxes)]


def build_model(args):
    backbone = Backbone(args.backbone, args.lr_backbone > 0, args.dilation)
    transformer = Transformer(
        d_model=args.hidden_dim, nhead=args.nheads, num_enc=args.enc_layers, num_dec=args.dec_layers,
        dim_ff=args.dim_feedforward, dropout=args.dropout,
    )
    model = DETR(backbone, transformer, num_classes=args.num_classes, num_queries=args.num_queries,
                 aux_loss=args.aux_loss)
    matcher = HungarianMatcher(args.set_cost_class, args.set_cost_bbox, args.set_cost_giou)
    weight_dict = {"loss_ce": 1.0, "loss_bbox": args.bbox_loss_coef, "loss_giou": args.giou_loss_coef}
    if args.aux_loss:
        base = dict(weight_dict)
        for i in range(args.dec_layers - 1):
            weight_dict.update({f"{k}_{i}": v for k, v in base.items()})
    criterion = SetCriterion(args.num_classes, matcher, weight_dict, args.eos_coef)
    return model, criterion, {"bbox": PostProcess()}
