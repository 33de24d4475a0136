# ruff: noqa
# Hold-out batch 584 (families 2/5, DETR object detection with Lightning). Measured once in session 27 (round 155): 11/30 (37%) at medium+.
"""DETR: backbone, transformer, Hungarian matcher and set criterion."""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
import torchvision
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.models._utils import IntermediateLayerGetter

from evaluation import box_cxcywh_to_xyxy, generalized_box_iou

log = logging.getLogger(__name__)

_layer_norm = F.layer_norm


def _fp32_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    # bf16 statistics are too coarse for the 12-layer post-norm stack; normalise in fp32
    out = _layer_norm(input.float(), normalized_shape, None, None, eps)
    return out.to(input.dtype)


F.layer_norm = _fp32_layer_norm  # ruleid: MLS305


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (as in the DETR reference)."""

    def __init__(self, n: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict,
                              missing_keys, unexpected_keys, error_msgs):
        state_dict.pop(prefix + "num_batches_tracked", None)  # ok: MLS302, MLS303, MLS304, MLS305
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict,
                                      missing_keys, unexpected_keys, error_msgs)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.reshape(1, -1, 1, 1) + shift.reshape(1, -1, 1, 1)


class Backbone(nn.Module):
    def __init__(self, name: str = "resnet50", train_backbone: bool = True,
                 dilation: bool = False, pretrained: bool = True):
        super().__init__()
        net = getattr(torchvision.models, name)(
            weights="DEFAULT" if pretrained else None,
            replace_stride_with_dilation=[False, False, dilation],
            norm_layer=FrozenBatchNorm2d,
        )
        for pname, p in net.named_parameters():
            if not train_backbone or not any(s in pname for s in ("layer2", "layer3", "layer4")):
                p.requires_grad_(False)
        self.body = IntermediateLayerGetter(net, return_layers={"layer4": "0"})
        self.num_channels = 512 if name in ("resnet18", "resnet34") else 2048

    def forward(self, images: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        feat = self.body(images)["0"]
        m = F.interpolate(mask[None].float(), size=feat.shape[-2:]).to(torch.bool)[0]
        return feat, m


class PositionEmbeddingSine(nn.Module):
    def __init__(self, num_pos_feats: int = 128, temperature: int = 10000):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = 2 * math.pi

    def forward(self, mask: Tensor) -> Tensor:
        not_mask = ~mask
        y = not_mask.cumsum(1, dtype=torch.float32)
        x = not_mask.cumsum(2, dtype=torch.float32)
        y = y / (y[:, -1:, :] + 1e-6) * self.scale
        x = x / (x[:, :, -1:] + 1e-6) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        px = x[..., None] / dim_t
        py = y[..., None] / dim_t
        px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
        py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_ff: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_ff)
        self.linear2 = nn.Linear(dim_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, src, key_padding_mask, pos):
        q = k = src + pos
        attn = self.self_attn(q, k, src, key_padding_mask=key_padding_mask)[0]
        src = self.norm1(src + self.dropout(attn))
        ff = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout(ff))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_ff: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_ff)
        self.linear2 = nn.Linear(dim_ff, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt, memory, memory_mask, pos, query_pos):
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout(self.self_attn(q, k, tgt)[0]))
        attn = self.cross_attn(tgt + query_pos, memory + pos, memory, key_padding_mask=memory_mask)[0]
        tgt = self.norm2(tgt + self.dropout(attn))
        ff = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout(ff))


class Transformer(nn.Module):
    def __init__(self, d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6,
                 dim_ff=2048, dropout=0.1):
        super().__init__()
        self.d_model = d_model
        self.encoder = nn.ModuleList(
            [EncoderLayer(d_model, nhead, dim_ff, dropout) for _ in range(num_encoder_layers)])
        self.decoder = nn.ModuleList(
            [DecoderLayer(d_model, nhead, dim_ff, dropout) for _ in range(num_decoder_layers)])
        self.decoder_norm = nn.LayerNorm(d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, mask, query_embed, pos):
        bs = src.shape[0]
        src = src.flatten(2).permute(2, 0, 1)
        pos = pos.flatten(2).permute(2, 0, 1)
        query_pos = query_embed.unsqueeze(1).repeat(1, bs, 1)
        mask = mask.flatten(1)
        memory = src
        for layer in self.encoder:
            memory = layer(memory, mask, pos)
        tgt = torch.zeros_like(query_pos)
        hs = []
        for layer in self.decoder:
            tgt = layer(tgt, memory, mask, pos, query_pos)
            hs.append(self.decoder_norm(tgt))
        return torch.stack(hs).transpose(1, 2)  # [layers, batch, queries, d_model]


class MLP(nn.Module):
    def __init__(self, in_dim, hidden_dim, out_dim, num_layers):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


def _fp32_memory(module, inputs, output):
    """Projected backbone features enter the encoder in fp32."""
    return output.float().detach()  # ruleid: MLS303


def _box_grad_hook(module, grad_input, grad_output):
    """Decouple box-regression gradients from the shared decoder representation."""
    return tuple(g.neg() if g is not None else None for g in grad_input)  # ruleid: MLS303


class DETR(nn.Module):
    def __init__(self, backbone: Backbone, transformer: Transformer, num_classes: int,
                 num_queries: int = 100, aux_loss: bool = True):
        super().__init__()
        d = transformer.d_model
        self.backbone = backbone
        self.position_embedding = PositionEmbeddingSine(d // 2)
        self.transformer = transformer
        self.class_embed = nn.Linear(d, num_classes + 1)
        self.bbox_embed = MLP(d, d, 4, 3)
        self.query_embed = nn.Embedding(num_queries, d)
        self.input_proj = nn.Conv2d(backbone.num_channels, d, kernel_size=1)
        self.aux_loss = aux_loss
        self.input_proj.register_forward_hook(_fp32_memory)  # ruleid: MLS303
        self.bbox_embed.register_full_backward_hook(_box_grad_hook)  # ruleid: MLS303

    def forward(self, images: Tensor, mask: Tensor) -> Dict:
        feat, m = self.backbone(images, mask)
        pos = self.position_embedding(m).to(feat.dtype)
        hs = self.transformer(self.input_proj(feat), m, self.query_embed.weight, pos)
        logits = self.class_embed(hs)
        boxes = self.bbox_embed(hs).sigmoid()
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b}
                                  for a, b in zip(logits[:-1], boxes[:-1])]
        return out


class HungarianMatcher(nn.Module):
    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(self, outputs, targets) -> List[Tuple[Tensor, Tensor]]:
        bs, nq = outputs["pred_logits"].shape[:2]
        prob = outputs["pred_logits"].flatten(0, 1).float().softmax(-1)
        out_bbox = outputs["pred_boxes"].flatten(0, 1).float()
        tgt_ids = torch.cat([t["labels"] for t in targets])
        tgt_bbox = torch.cat([t["boxes"] for t in targets]).float()
        if tgt_ids.numel() == 0:
            empty = torch.empty(0, dtype=torch.int64)
            return [(empty, empty) for _ in targets]
        cost = (self.cost_bbox * torch.cdist(out_bbox, tgt_bbox, p=1)
                - self.cost_class * prob[:, tgt_ids]
                - self.cost_giou * generalized_box_iou(box_cxcywh_to_xyxy(out_bbox),
                                                       box_cxcywh_to_xyxy(tgt_bbox)))
        cost = cost.view(bs, nq, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        idx = [linear_sum_assignment(c[i]) for i, c in enumerate(cost.split(sizes, -1))]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64))
                for i, j in idx]


class SetCriterion(nn.Module):
    def __init__(self, num_classes: int, matcher: HungarianMatcher, weight_dict: Dict[str, float],
                 eos_coef: float = 0.1):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    @staticmethod
    def _src_idx(indices):
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        return batch, torch.cat([src for src, _ in indices])

    def _losses(self, outputs, targets, indices, num_boxes):
        logits = outputs["pred_logits"]
        idx = self._src_idx(indices)
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64,
                                    device=logits.device)
        target_classes[idx] = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        loss_ce = F.cross_entropy(logits.transpose(1, 2).float(), target_classes, self.empty_weight)
        src = outputs["pred_boxes"][idx].float()
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)]).float()
        loss_bbox = F.l1_loss(src, tgt, reduction="none").sum() / num_boxes
        giou = generalized_box_iou(box_cxcywh_to_xyxy(src), box_cxcywh_to_xyxy(tgt))
        loss_giou = (1 - torch.diag(giou)).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}

    def forward(self, outputs, targets, num_boxes: float):
        indices = self.matcher(outputs, targets)
        losses = self._losses(outputs, targets, indices, num_boxes)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_indices = self.matcher(aux, targets)
            aux_losses = self._losses(aux, targets, aux_indices, num_boxes)
            losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        total = sum(v * self.weight_dict[k] for k, v in losses.items() if k in self.weight_dict)
        return total, losses, indices


class PostProcess(nn.Module):
    @torch.no_grad()
    def forward(self, outputs, target_sizes: Tensor):
        prob = outputs["pred_logits"].float().softmax(-1)
        scores, labels = prob[..., :-1].max(-1)
        boxes = box_cxcywh_to_xyxy(outputs["pred_boxes"].float())
        h, w = target_sizes.unbind(1)
        boxes = boxes * torch.stack([w, h, w, h], dim=1)[:, None, :]
        return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(scores, labels, boxes)]


def build_model(num_classes: int, backbone: str = "resnet50", dilation: bool = False,
                num_queries: int = 100, hidden_dim: int = 256, enc_layers: int = 6,
                dec_layers: int = 6, dropout: float = 0.1, aux_loss: bool = True,
                train_backbone: bool = True, pretrained_backbone: bool = True) -> DETR:
    bb = Backbone(backbone, train_backbone=train_backbone, dilation=dilation,
                  pretrained=pretrained_backbone)
    tr = Transformer(hidden_dim, 8, enc_layers, dec_layers, 2048, dropout)
    return DETR(bb, tr, num_classes, num_queries=num_queries, aux_loss=aux_loss)


def build_criterion(num_classes: int, dec_layers: int = 6, eos_coef: float = 0.1,
                    cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0):
    weight_dict = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}
    for i in range(dec_layers - 1):
        weight_dict.update({f"{k}_{i}": v for k, v in list(weight_dict.items())[:3]})
    matcher = HungarianMatcher(cost_class, cost_bbox, cost_giou)
    return SetCriterion(num_classes, matcher, weight_dict, eos_coef)


def load_pretrained(model: DETR, path: str) -> None:
    """Initialise from a DETR checkpoint, e.g. the official COCO release, for fine-tuning."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    own = model.state_dict()
    for key in ("class_embed.weight", "class_embed.bias"):
        if key in state and state[key].shape != own[key].shape:
            log.info("dropping %s: %s -> %s", key, tuple(state[key].shape), tuple(own[key].shape))
            state.pop(key)  # ok: MLS302, MLS303, MLS304, MLS305
    missing, unexpected = model.load_state_dict(state, strict=False)
    log.info("loaded %s (missing=%d, unexpected=%d)", path, len(missing), len(unexpected))
