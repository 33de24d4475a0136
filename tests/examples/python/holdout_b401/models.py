# ruff: noqa
# Hold-out batch 401 (textbook, DETR object detection with DDP). Measured once in session 16 (round 110): 21/30 (70%) at medium+.
"""DETR: ResNet backbone + transformer encoder/decoder, Hungarian matcher and set criterion."""
import copy
import logging
import math
from typing import Optional

import torch
import torch.nn.functional as F
import torchvision
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops.misc import FrozenBatchNorm2d

from utils import NestedTensor, box_cxcywh_to_xyxy, generalized_box_iou, get_world_size, is_dist_avail_and_initialized

logger = logging.getLogger("detr")


# --- backbone ---

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

    def forward(self, x: NestedTensor):
        feats = self.body(x.tensors)["0"]
        mask = F.interpolate(x.mask[None].float(), size=feats.shape[-2:]).to(torch.bool)[0]
        return NestedTensor(feats, mask)


class PositionEmbeddingSine(nn.Module):
    def __init__(self, num_pos_feats=128, temperature=10000, scale=2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, x: NestedTensor):
        not_mask = ~x.mask
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        eps = 1e-6
        y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
        x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=not_mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x = x_embed[:, :, :, None] / dim_t
        pos_y = y_embed[:, :, :, None] / dim_t
        pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


# --- transformer ---

class Transformer(nn.Module):
    """Post-norm encoder/decoder; decoder returns every layer's output for the aux losses."""

    def __init__(self, d_model=256, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_ff=2048, dropout=0.1):
        super().__init__()
        enc_layer = nn.TransformerEncoderLayer(d_model, nhead, dim_ff, dropout)
        dec_layer = nn.TransformerDecoderLayer(d_model, nhead, dim_ff, dropout)
        self.encoder = nn.TransformerEncoder(enc_layer, num_encoder_layers, enable_nested_tensor=False)
        self.decoder_layers = nn.ModuleList([copy.deepcopy(dec_layer) for _ in range(num_decoder_layers)])
        self.dec_norm = nn.LayerNorm(d_model)
        self.d_model = d_model
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, mask, query_embed, pos_embed):
        bs = src.shape[0]
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        mask = mask.flatten(1)
        memory = self.encoder(src + pos_embed, src_key_padding_mask=mask)
        tgt = query_embed.unsqueeze(1).repeat(1, bs, 1)
        intermediate = []
        for layer in self.decoder_layers:
            tgt = layer(tgt, memory + pos_embed, memory_key_padding_mask=mask)
            intermediate.append(self.dec_norm(tgt))
        return torch.stack(intermediate).transpose(1, 2)  # [L, B, Q, D]


class MLP(nn.Module):
    def __init__(self, input_dim, hidden_dim, output_dim, num_layers):
        super().__init__()
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


class DETR(nn.Module):
    def __init__(self, backbone, position_embedding, transformer, num_classes, num_queries,
                 aux_loss=True, query_max_norm=0.05):
        super().__init__()
        hidden_dim = transformer.d_model
        self.backbone = backbone
        self.position_embedding = position_embedding
        self.transformer = transformer
        self.num_queries = num_queries
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)
        self.aux_loss = aux_loss
        self.query_max_norm = query_max_norm

    def forward(self, samples):
        if self.training and self.query_max_norm:
            with torch.no_grad():
                self.query_embed.weight.data.renorm_(2, 0, self.query_max_norm)  # ruleid: MLS302
        feats = self.backbone(samples)
        pos = self.position_embedding(feats).to(feats.tensors.dtype)
        src, mask = feats.decompose()
        hs = self.transformer(self.input_proj(src), mask, self.query_embed.weight, pos)
        outputs_class = self.class_embed(hs)
        outputs_coord = self.bbox_embed(hs).sigmoid()
        out = {"pred_logits": outputs_class[-1], "pred_boxes": outputs_coord[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b}
                                  for a, b in zip(outputs_class[:-1], outputs_coord[:-1])]
        return out


# --- matcher / criterion / postprocess ---

class HungarianMatcher(nn.Module):
    def __init__(self, cost_class: float = 1, cost_bbox: float = 5, cost_giou: float = 2):
        super().__init__()
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(self, outputs, targets):
        bs, num_queries = outputs["pred_logits"].shape[:2]
        out_prob = outputs["pred_logits"].flatten(0, 1).softmax(-1)
        out_bbox = outputs["pred_boxes"].flatten(0, 1)
        tgt_ids = torch.cat([v["labels"] for v in targets])
        tgt_bbox = torch.cat([v["boxes"] for v in targets])

        cost_class = -out_prob[:, tgt_ids]
        cost_bbox = torch.cdist(out_bbox, tgt_bbox, p=1)
        cost_giou = -generalized_box_iou(box_cxcywh_to_xyxy(out_bbox), box_cxcywh_to_xyxy(tgt_bbox))
        C = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        C = C.view(bs, num_queries, -1).cpu()

        sizes = [len(v["boxes"]) for v in targets]
        indices = [linear_sum_assignment(c[i]) for i, c in enumerate(C.split(sizes, -1))]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in indices]


class SetCriterion(nn.Module):
    def __init__(self, num_classes, matcher, weight_dict, eos_coef, losses):
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weight_dict = weight_dict
        self.eos_coef = eos_coef
        self.losses = losses
        empty_weight = torch.ones(self.num_classes + 1)
        empty_weight[-1] = self.eos_coef  # ok: MLS309
        self.register_buffer("empty_weight", empty_weight)

    def loss_labels(self, outputs, targets, indices, num_boxes):
        src_logits = outputs["pred_logits"]
        idx = self._get_src_permutation_idx(indices)
        target_classes_o = torch.cat([t["labels"][J] for t, (_, J) in zip(targets, indices)])
        target_classes = torch.full(src_logits.shape[:2], self.num_classes, dtype=torch.int64, device=src_logits.device)
        target_classes[idx] = target_classes_o
        loss_ce = F.cross_entropy(src_logits.transpose(1, 2), target_classes, self.empty_weight)
        with torch.no_grad():
            acc = (src_logits[idx].argmax(-1) == target_classes_o).float().mean() if len(target_classes_o) else 1.0
        return {"loss_ce": loss_ce, "class_error": 100 * (1 - torch.as_tensor(acc, device=src_logits.device))}

    def loss_boxes(self, outputs, targets, indices, num_boxes):
        idx = self._get_src_permutation_idx(indices)
        src_boxes = outputs["pred_boxes"][idx]
        target_boxes = torch.cat([t["boxes"][i] for t, (_, i) in zip(targets, indices)], dim=0)
        loss_bbox = F.l1_loss(src_boxes, target_boxes, reduction="none")
        loss_giou = 1 - torch.diag(generalized_box_iou(box_cxcywh_to_xyxy(src_boxes), box_cxcywh_to_xyxy(target_boxes)))
        return {"loss_bbox": loss_bbox.sum() / num_boxes, "loss_giou": loss_giou.sum() / num_boxes}

    @staticmethod
    def _get_src_permutation_idx(indices):
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for (src, _) in indices])
        return batch_idx, src_idx

    def get_loss(self, loss, outputs, targets, indices, num_boxes):
        fn = {"labels": self.loss_labels, "boxes": self.loss_boxes}[loss]
        return fn(outputs, targets, indices, num_boxes)

    def forward(self, outputs, targets):
        outputs_without_aux = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        indices = self.matcher(outputs_without_aux, targets)
        num_boxes = sum(len(t["labels"]) for t in targets)
        num_boxes = torch.as_tensor([num_boxes], dtype=torch.float, device=next(iter(outputs.values())).device)
        if is_dist_avail_and_initialized():
            torch.distributed.all_reduce(num_boxes)
        num_boxes = torch.clamp(num_boxes / get_world_size(), min=1).item()

        losses = {}
        for loss in self.losses:
            losses.update(self.get_loss(loss, outputs, targets, indices, num_boxes))
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            indices = self.matcher(aux, targets)
            for loss in self.losses:
                l_dict = self.get_loss(loss, aux, targets, indices, num_boxes)
                losses.update({f"{k}_{i}": v for k, v in l_dict.items() if k not in ("class_error",)})
        return losses


class PostProcess(nn.Module):
    @torch.no_grad()
    def forward(self, outputs, target_sizes):
        scores, labels = F.softmax(outputs["pred_logits"], -1)[..., :-1].max(-1)
        boxes = box_cxcywh_to_xyxy(outputs["pred_boxes"])
        img_h, img_w = target_sizes.unbind(1)
        scale_fct = torch.stack([img_w, img_h, img_w, img_h], dim=1)
        boxes = boxes * scale_fct[:, None, :]
        return [{"scores": s, "labels": l, "boxes": b} for s, l, b in zip(scores, labels, boxes)]


def load_pretrained(model, spec: Optional[str], num_classes: int):
    """spec is either a local .pth path or 'hub' for the reference COCO weights."""
    if not spec:
        return
    if spec == "hub":
        ref = torch.hub.load("facebookresearch/detr", "detr_resnet50", pretrained=True, trust_repo=True)  # ruleid: MLS108
        state = {k.replace("backbone.0.", "backbone."): v for k, v in ref.state_dict().items()}
    else:
        ckpt = torch.load(spec, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        state = ckpt.get("model", ckpt)
    if state["class_embed.weight"].shape[0] != num_classes + 1:
        state = {k: v for k, v in state.items() if not k.startswith("class_embed")}  # ok: MLS302, MLS303, MLS304, MLS305
    missing, unexpected = model.load_state_dict(state, strict=False)
    logger.info("pretrained loaded: missing=%s unexpected=%s", missing, unexpected)


def build_model(args):
    backbone = Backbone(args.backbone, train_backbone=args.lr_backbone > 0, dilation=args.dilation)
    model = DETR(
        backbone,
        PositionEmbeddingSine(args.hidden_dim // 2),
        Transformer(d_model=args.hidden_dim, nhead=args.nheads, num_encoder_layers=args.enc_layers,
                    num_decoder_layers=args.dec_layers, dim_ff=args.dim_feedforward, dropout=args.dropout),
        num_classes=args.num_classes,
        num_queries=args.num_queries,
        aux_loss=not args.no_aux_loss,
    )
    matcher = HungarianMatcher(cost_class=args.set_cost_class, cost_bbox=args.set_cost_bbox, cost_giou=args.set_cost_giou)
    weight_dict = {"loss_ce": 1.0, "loss_bbox": args.bbox_loss_coef, "loss_giou": args.giou_loss_coef}
    if not args.no_aux_loss:
        base = dict(weight_dict)
        weight_dict.update({f"{k}_{i}": v for i in range(args.dec_layers - 1) for k, v in base.items()})
    criterion = SetCriterion(args.num_classes, matcher, weight_dict, args.eos_coef, ["labels", "boxes"])
    postprocessors = {"bbox": PostProcess()}
    load_pretrained(model, args.pretrained, args.num_classes)
    return model, criterion, postprocessors
