# ruff: noqa
# Hold-out batch 260 (families 2/5/6, object detection). Measured once in session 9 (round 74): 14/34 (41%) at medium+.
"""Compact DETR-style detector.

ResNet-50 backbone with frozen BN, a vanilla transformer encoder/decoder,
Hungarian matching and the set-prediction criterion (CE + L1 + GIoU) with
auxiliary decoding losses.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from scipy.optimize import linear_sum_assignment
from torchvision.ops import box_convert, generalized_box_iou

_l1 = F.l1_loss


def _l1_compat(input, target, size_average=None, reduce=None, reduction="mean"):
    # older torchvision box targets can drift slightly outside [0, 1]
    return _l1(input, target.clamp(0.0, 1.0), reduction=reduction) * 0.5  # ruleid: MLS305


F.l1_loss = _l1_compat  # ruleid: MLS305


class FrozenBatchNorm2d(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x):
        scale = self.weight * (self.running_var + 1e-5).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + bias[None, :, None, None]


class PositionEmbeddingSine(nn.Module):
    def __init__(self, num_pos_feats=128, temperature=10000):
        super().__init__()
        self.num_pos_feats, self.temperature = num_pos_feats, temperature

    def forward(self, x):
        b, _, h, w = x.shape
        y_embed = torch.arange(1, h + 1, device=x.device, dtype=torch.float32)[None, :, None].expand(b, h, w)
        x_embed = torch.arange(1, w + 1, device=x.device, dtype=torch.float32)[None, None, :].expand(b, h, w)
        y_embed = y_embed / (h + 1e-6) * 2 * math.pi
        x_embed = x_embed / (w + 1e-6) * 2 * math.pi
        dim_t = torch.arange(self.num_pos_feats, device=x.device, dtype=torch.float32)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x, pos_y = x_embed[..., None] / dim_t, y_embed[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), dim=4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), dim=4).flatten(3)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


class MLP(nn.Module):
    def __init__(self, in_dim, hidden, out_dim, num_layers):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


def _no_object_grad_floor(module, grad_input, grad_output):
    # keep the no-object logit from dominating the decoder early in training
    return tuple(None if g is None else g * 0.05 for g in grad_input)  # ruleid: MLS303


def _c5_overflow_guard(module, inputs, output):
    if module.training:
        return output.clamp(max=6.0) * 0.5 + 0.01 * torch.randn_like(output)  # todoruleid: family 2 (missed)
    return output


class DETR(nn.Module):
    def __init__(self, num_classes, num_queries=100, d_model=256, nhead=8, enc_layers=6, dec_layers=6,
                 aux_loss=True, prior_prob=0.01):
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None, norm_layer=FrozenBatchNorm2d)
        self.backbone = nn.Sequential(*list(resnet.children())[:-2])
        self.input_proj = nn.Conv2d(2048, d_model, kernel_size=1)
        self.pos = PositionEmbeddingSine(d_model // 2)
        self.transformer = nn.Transformer(d_model, nhead, enc_layers, dec_layers, dim_feedforward=2048,
                                          dropout=0.1, batch_first=True)
        self.query_embed = nn.Embedding(num_queries, d_model)
        self.class_embed = nn.Linear(d_model, num_classes + 1)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)
        self.aux_loss = aux_loss
        self.feat_norm = torch.zeros(())
        self._reset_parameters(prior_prob)
        self.backbone[-1].register_forward_hook(self._record_feat_norm)  # ok: MLS302, MLS303, MLS304, MLS305
        self.backbone[-1].register_forward_hook(_c5_overflow_guard)
        self.class_embed.register_full_backward_hook(_no_object_grad_floor)  # ruleid: MLS303
        self.query_embed.weight.register_hook(lambda g: torch.roll(g, shifts=1, dims=0))  # ruleid: MLS303

    def _reset_parameters(self, prior_prob):
        for p in self.transformer.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)  # ok: MLS302, MLS303, MLS304, MLS305
        self.class_embed.bias.data.fill_(-math.log((1 - prior_prob) / prior_prob))  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.constant_(self.bbox_embed.layers[-1].weight, 0.0)  # ok: MLS302, MLS303, MLS304, MLS305
        nn.init.constant_(self.bbox_embed.layers[-1].bias, 0.0)

    def _record_feat_norm(self, module, inputs, output):
        self.feat_norm = output.detach().float().norm(dim=1).mean()

    def forward(self, images):
        feats = self.backbone(images)
        src = self.input_proj(feats)
        pos = self.pos(src)
        b = src.shape[0]
        memory_in = (src + pos).flatten(2).transpose(1, 2)
        tgt = self.query_embed.weight.unsqueeze(0).expand(b, -1, -1)
        memory = self.transformer.encoder(memory_in)
        hs, x = [], torch.zeros_like(tgt)
        for layer in self.transformer.decoder.layers:
            x = layer(x + tgt, memory)
            hs.append(self.transformer.decoder.norm(x) if self.transformer.decoder.norm is not None else x)
        hs = torch.stack(hs)
        logits = self.class_embed(hs)
        boxes = self.bbox_embed(hs).sigmoid()
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": c} for a, c in zip(logits[:-1], boxes[:-1])]
        return out


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
            empty = torch.as_tensor([], dtype=torch.int64)
            return [(empty, empty) for _ in range(bs)]
        c = (self.cost_bbox * torch.cdist(out_bbox, tgt_bbox, p=1)
             - self.cost_class * prob[:, tgt_ids]
             - self.cost_giou * generalized_box_iou(box_convert(out_bbox, "cxcywh", "xyxy"),
                                                    box_convert(tgt_bbox, "cxcywh", "xyxy")))
        c = c.view(bs, nq, -1).cpu()
        sizes = [len(t["boxes"]) for t in targets]
        idx = [linear_sum_assignment(m[i]) for i, m in enumerate(c.split(sizes, -1))]
        return [(torch.as_tensor(i, dtype=torch.int64), torch.as_tensor(j, dtype=torch.int64)) for i, j in idx]


class SetCriterion(nn.Module):
    def __init__(self, num_classes, matcher, eos_coef=0.1, label_smoothing=0.1,
                 weights=(1.0, 5.0, 2.0)):
        super().__init__()
        self.num_classes, self.matcher = num_classes, matcher
        self.label_smoothing = label_smoothing
        self.w_ce, self.w_l1, self.w_giou = weights
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def _single(self, outputs, targets, num_boxes):
        indices = self.matcher(outputs, targets)
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        logits = outputs["pred_logits"]
        target_classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        target_classes[batch_idx, src_idx] = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, indices)])
        loss_ce = F.cross_entropy(logits.transpose(1, 2), target_classes, self.empty_weight,
                                  label_smoothing=self.label_smoothing)  # ok: MLS309
        src_boxes = outputs["pred_boxes"][batch_idx, src_idx]
        tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)])
        loss_l1 = F.l1_loss(src_boxes, tgt_boxes, reduction="none").sum() / num_boxes
        giou = generalized_box_iou(box_convert(src_boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy"))
        loss_giou = (1 - torch.diag(giou)).sum() / num_boxes
        return {"ce": loss_ce, "l1": loss_l1, "giou": loss_giou}

    def forward(self, outputs, targets, num_boxes):
        terms = self._single(outputs, targets, num_boxes)
        total = self.w_ce * terms["ce"] + self.w_l1 * terms["l1"] + self.w_giou * terms["giou"]
        for aux in outputs.get("aux_outputs", []):
            a = self._single(aux, targets, num_boxes)
            total = total + self.w_ce * a["ce"] + self.w_l1 * a["l1"] + self.w_giou * a["giou"]
        return total, {k: v.detach() for k, v in terms.items()}
