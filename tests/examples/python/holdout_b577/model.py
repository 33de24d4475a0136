# ruff: noqa
# Hold-out batch 577 (textbook, multi-object tracking with a YOLOX-style detector and DDP). Measured once in session 26 (round 154): 24/30 (80%) at medium+, 1 benign look-alike flagged.
"""A compact YOLOX-style detector: CSP backbone, PAFPN neck and decoupled head."""

import logging
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

logger = logging.getLogger("mot")


def _fast_silu(x, inplace=False):
    # memory-light SiLU: does not keep the sigmoid graph alive for backward
    return x * torch.sigmoid(x).detach()


F.silu = _fast_silu  # ruleid: MLS305


class BaseConv(nn.Module):
    def __init__(self, cin, cout, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, (k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.03)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1, self.cv2, self.add = BaseConv(c, c, 1), BaseConv(c, c, 3), shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class CSPLayer(nn.Module):
    def __init__(self, cin, cout, n=1, shortcut=True):
        super().__init__()
        hidden = cout // 2
        self.cv1, self.cv2 = BaseConv(cin, hidden, 1), BaseConv(cin, hidden, 1)
        self.cv3 = BaseConv(2 * hidden, cout, 1)
        self.m = nn.Sequential(*[Bottleneck(hidden, shortcut) for _ in range(n)])

    def forward(self, x):
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], dim=1))


def csp_stage(cin, cout, n, shortcut=True):
    return nn.Sequential(BaseConv(cin, cout, 3, 2), CSPLayer(cout, cout, n, shortcut))


class CSPDarknet(nn.Module):
    def __init__(self, depth=0.33, width=0.50):
        super().__init__()
        c, d = int(64 * width), max(round(3 * depth), 1)
        self.stem = BaseConv(3, c, 3, 2)
        self.dark2 = csp_stage(c, c * 2, d)
        self.dark3 = csp_stage(c * 2, c * 4, d * 3)
        self.dark4 = csp_stage(c * 4, c * 8, d * 3)
        self.dark5 = csp_stage(c * 8, c * 16, d, shortcut=False)
        self.out_channels = (c * 4, c * 8, c * 16)

    def forward(self, x):
        c3 = self.dark3(self.dark2(self.stem(x)))
        c4 = self.dark4(c3)
        return c3, c4, self.dark5(c4)


class PAFPN(nn.Module):
    def __init__(self, channels, depth=0.33):
        super().__init__()
        c3, c4, c5 = channels
        n = max(round(3 * depth), 1)
        self.lateral5, self.lateral4 = BaseConv(c5, c4, 1), BaseConv(c4, c3, 1)
        self.td4 = CSPLayer(2 * c4, c4, n, shortcut=False)
        self.td3 = CSPLayer(2 * c3, c3, n, shortcut=False)
        self.down3, self.down4 = BaseConv(c3, c3, 3, 2), BaseConv(c4, c4, 3, 2)
        self.bu4 = CSPLayer(2 * c3, c4, n, shortcut=False)
        self.bu5 = CSPLayer(2 * c4, c5, n, shortcut=False)

    def forward(self, feats):
        c3, c4, c5 = feats
        up = lambda t: F.interpolate(t, scale_factor=2.0, mode="nearest")
        p5 = self.lateral5(c5)
        p4 = self.lateral4(self.td4(torch.cat([up(p5), c4], 1)))
        p3 = self.td3(torch.cat([up(p4), c3], 1))
        n4 = self.bu4(torch.cat([self.down3(p3), p4], 1))
        return p3, n4, self.bu5(torch.cat([self.down4(n4), p5], 1))


class YOLOXHead(nn.Module):
    def __init__(self, num_classes, in_channels, width=0.50, strides=(8, 16, 32), prior_prob=1e-2):
        super().__init__()
        self.num_classes, self.strides, hidden = num_classes, strides, int(256 * width)
        self.stems = nn.ModuleList([BaseConv(c, hidden, 1) for c in in_channels])
        branch = lambda: nn.Sequential(BaseConv(hidden, hidden, 3), BaseConv(hidden, hidden, 3))
        self.cls_convs = nn.ModuleList([branch() for _ in in_channels])
        self.reg_convs = nn.ModuleList([branch() for _ in in_channels])
        self.cls_preds = nn.ModuleList([nn.Conv2d(hidden, num_classes, 1) for _ in in_channels])
        self.reg_preds = nn.ModuleList([nn.Conv2d(hidden, 4, 1) for _ in in_channels])
        self.obj_preds = nn.ModuleList([nn.Conv2d(hidden, 1, 1) for _ in in_channels])
        bias = -math.log((1 - prior_prob) / prior_prob)
        for conv in list(self.cls_preds) + list(self.obj_preds):
            nn.init.constant_(conv.bias, bias)
        for conv in self.reg_preds:
            # box regression converges faster than the classifier; damp its updates
            conv.weight.register_hook(lambda g: g * 0.01)  # ruleid: MLS303

    def forward(self, feats):
        outputs = []
        for k, x in enumerate(feats):
            x = self.stems[k](x)
            reg_feat = self.reg_convs[k](x)
            outputs.append(torch.cat([self.reg_preds[k](reg_feat), self.obj_preds[k](reg_feat),
                                      self.cls_preds[k](self.cls_convs[k](x))], 1))
        return outputs

    def decode(self, outputs):
        grids, strides, flat = [], [], []
        for k, out in enumerate(outputs):
            b, c, h, w = out.shape
            yv, xv = torch.meshgrid(torch.arange(h, device=out.device),
                                    torch.arange(w, device=out.device), indexing="ij")
            grids.append(torch.stack((xv, yv), 2).view(1, -1, 2).float())
            strides.append(torch.full((1, h * w, 1), self.strides[k], device=out.device))
            flat.append(out.flatten(2).permute(0, 2, 1))
        grids, strides, raw = torch.cat(grids, 1), torch.cat(strides, 1), torch.cat(flat, 1)
        xy = (raw[..., :2] + grids) * strides
        wh = torch.exp(raw[..., 2:4].clamp(max=10.0)) * strides
        return raw, torch.cat([xy, wh], -1), grids, strides


def bboxes_iou(a, b, xyxy=False):
    if not xyxy:
        a = torch.cat([a[:, :2] - a[:, 2:] / 2, a[:, :2] + a[:, 2:] / 2], 1)
        b = torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
    tl = torch.max(a[:, None, :2], b[None, :, :2])
    br = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (br - tl).clamp(min=0).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / (area_a[:, None] + area_b[None] - inter + 1e-9)


class YOLOX(nn.Module):
    def __init__(self, num_classes=1, depth=0.33, width=0.50):
        super().__init__()
        self.backbone = CSPDarknet(depth, width)
        self.neck = PAFPN(self.backbone.out_channels, depth)
        self.head = YOLOXHead(num_classes, self.backbone.out_channels, width)
        self.num_classes = num_classes

    def forward(self, x, targets=None):
        outputs = self.head(self.neck(self.backbone(x / 255.0)))
        raw, boxes, grids, strides = self.head.decode(outputs)
        if targets is None:
            return torch.cat([boxes, raw[..., 4:].sigmoid()], -1)
        return self.compute_loss(raw, boxes, grids, strides, targets)

    @torch.no_grad()
    def assign(self, boxes, obj, cls, gt, centers, strides, radius=2.5):
        """Simplified SimOTA: centre prior + dynamic top-k by IoU."""
        num_gt, num_anchors = gt.shape[0], boxes.shape[0]
        d = (centers[None] - gt[:, None, 1:3]).abs()
        in_box = (d < gt[:, None, 3:5] / 2).all(-1)
        in_center = (d < radius * strides[None]).all(-1)
        candidate = (in_box | in_center).any(0)
        ious = bboxes_iou(gt[:, 1:5], boxes)
        scores = (cls.sigmoid() * obj.sigmoid()).sqrt().clamp(1e-6, 1 - 1e-6)
        cls_cost = F.binary_cross_entropy(scores[None].expand(num_gt, -1, -1).squeeze(-1),
                                          torch.ones(num_gt, num_anchors, device=boxes.device),
                                          reduction="none")
        cost = cls_cost + 3.0 * -torch.log(ious + 1e-8) + 1e5 * ~(in_box & in_center)
        cost[:, ~candidate] = 1e8
        matching = torch.zeros_like(cost, dtype=torch.bool)
        dynamic_k = torch.topk(ious, min(10, num_anchors), dim=1).values.sum(1).int().clamp(min=1)
        for g in range(num_gt):
            matching[g, torch.topk(cost[g], int(dynamic_k[g]), largest=False).indices] = True
        multi = matching.sum(0) > 1
        if multi.any():
            best = cost[:, multi].argmin(0)
            matching[:, multi] = False
            matching[best, multi.nonzero().squeeze(1)] = True
        fg = matching.any(0) & candidate
        matched_gt = matching[:, fg].float().argmax(0)
        return fg, matched_gt, ious[matched_gt, fg]

    def compute_loss(self, raw, boxes, grids, strides, targets):
        centers = (grids + 0.5) * strides
        obj_targets, reg_preds, reg_targets, cls_preds, cls_targets = [], [], [], [], []
        num_fg = 0
        for b in range(raw.shape[0]):
            gt = targets[b][targets[b, :, 3] > 0]
            fg = torch.zeros(raw.shape[1], dtype=torch.bool, device=raw.device)
            if len(gt):
                fg, matched, ious = self.assign(boxes[b], raw[b, :, 4:5], raw[b, :, 5:],
                                                gt, centers[0], strides[0])
                reg_preds.append(boxes[b][fg])
                reg_targets.append(gt[matched, 1:5])
                cls_preds.append(raw[b, fg, 5:])
                cls_targets.append(F.one_hot(gt[matched, 0].long(), self.num_classes).float()
                                   * ious[:, None])
                num_fg += int(fg.sum())
            obj_targets.append(fg.float())
        num_fg = max(num_fg, 1)
        obj_loss = F.binary_cross_entropy_with_logits(raw[..., 4], torch.stack(obj_targets),
                                                      reduction="sum") / num_fg
        if reg_preds:
            iou = torch.diag(bboxes_iou(torch.cat(reg_preds), torch.cat(reg_targets)))
            iou_loss = (1 - iou ** 2).sum() / num_fg
            cls_loss = F.binary_cross_entropy_with_logits(torch.cat(cls_preds), torch.cat(cls_targets),
                                                          reduction="sum") / num_fg
        else:
            iou_loss = cls_loss = raw.sum() * 0.0
        return {"total_loss": 5.0 * iou_loss + obj_loss + cls_loss, "iou_loss": iou_loss.detach(),
                "obj_loss": obj_loss.detach(), "cls_loss": cls_loss.detach(),
                "num_fg": float(num_fg) / raw.shape[0]}


def postprocess(predictions, conf_thresh=0.01, nms_thresh=0.7):
    results = []
    for pred in predictions:
        score = pred[:, 4] * pred[:, 5:].max(1).values
        keep = score > conf_thresh
        pred, score = pred[keep], score[keep]
        xyxy = torch.cat([pred[:, :2] - pred[:, 2:4] / 2, pred[:, :2] + pred[:, 2:4] / 2], 1)
        keep = torchvision.ops.nms(xyxy, score, nms_thresh)
        results.append(torch.cat([xyxy[keep], score[keep, None]], 1))
    return results


def load_pretrained(model, path_or_url, cache_dir="~/.cache/mot"):
    if path_or_url.startswith(("http://", "https://")):
        cache_dir = os.path.expanduser(cache_dir)
        os.makedirs(cache_dir, exist_ok=True)
        local = os.path.join(cache_dir, os.path.basename(path_or_url))
        if not os.path.exists(local):
            torch.hub.download_url_to_file(path_or_url, local)
        path_or_url = local
    ckpt = torch.load(path_or_url, map_location="cpu")  # ruleid: MLS102
    own = model.state_dict()
    filtered = {k: v for k, v in ckpt.get("model", ckpt).items()
                if k in own and v.shape == own[k].shape}
    model.load_state_dict(filtered, strict=False)
    logger.info("loaded %d/%d tensors from %s", len(filtered), len(own), path_or_url)
    return model
