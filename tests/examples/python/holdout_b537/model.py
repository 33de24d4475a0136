# ruff: noqa
# Hold-out batch 537 (textbook, LiDAR 3D object detection). Measured once in session 24 (round 144): 22/30 (73%) at medium+.
"""PointPillars. Boxes (LiDAR frame): (x, y, z, dx, dy, dz, heading), z at box center."""
import builtins
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import nms as nms_2d

def limit_period(val, offset=0.5, period=math.pi):
    return val - torch.floor(val / period + offset) * period

class PFNLayer(nn.Module):
    def __init__(self, in_channels, out_channels, last_layer=False):
        super().__init__()
        self.last_vfe = last_layer
        if not last_layer:
            out_channels = out_channels // 2
        self.linear = nn.Linear(in_channels, out_channels, bias=False)
        self.norm = nn.BatchNorm1d(out_channels, eps=1e-3, momentum=0.01)

    def forward(self, x):
        x = self.linear(x)
        x = self.norm(x.permute(0, 2, 1).contiguous()).permute(0, 2, 1)
        x = F.relu(x)
        x_max = x.max(dim=1, keepdim=True)[0]
        if self.last_vfe:
            return x_max
        return torch.cat([x, x_max.repeat(1, x.shape[1], 1)], dim=2)

class PillarFeatureNet(nn.Module):
    def __init__(self, num_point_features, num_filters, voxel_size, pc_range):
        super().__init__()
        in_ch = num_point_features + 6
        filters = [in_ch] + list(num_filters)
        self.pfn_layers = nn.ModuleList(
            PFNLayer(filters[i], filters[i + 1], last_layer=(i == len(filters) - 2))
            for i in range(len(filters) - 1)
        )
        self.vsize = list(voxel_size)
        self.offset = [voxel_size[i] / 2 + pc_range[i] for i in range(3)]
        self.out_channels = filters[-1]

    def forward(self, voxels, num_points, coords):
        # voxels: (P, N, C); num_points: (P,); coords: (P, 4) as [batch, z, y, x]
        npts = num_points.type_as(voxels).clamp(min=1.0).view(-1, 1, 1)
        points_mean = voxels[:, :, :3].sum(dim=1, keepdim=True) / npts
        f_cluster = voxels[:, :, :3] - points_mean

        cf = coords[:, [3, 2, 1]].to(voxels.dtype)
        centers = cf * cf.new_tensor(self.vsize) + cf.new_tensor(self.offset)
        f_center = voxels[:, :, :3] - centers.unsqueeze(1)

        features = torch.cat([voxels, f_cluster, f_center], dim=-1)
        slot = torch.arange(features.shape[1], device=features.device).view(1, -1)
        features = features * (slot < num_points.view(-1, 1)).unsqueeze(-1).type_as(features)
        for pfn in self.pfn_layers:
            features = pfn(features)
        return features.squeeze(1)

class PointPillarsScatter(nn.Module):
    def __init__(self, num_bev_features, grid_size):
        super().__init__()
        self.num_bev_features = num_bev_features
        self.nx, self.ny = int(grid_size[0]), int(grid_size[1])

    def forward(self, pillar_features, coords, batch_size):
        canvases = []
        for b in range(batch_size):
            canvas = pillar_features.new_zeros(self.num_bev_features, self.nx * self.ny)
            m = coords[:, 0] == b
            canvas[:, (coords[m, 2] * self.nx + coords[m, 3]).long()] = pillar_features[m].t()
            canvases.append(canvas)
        return torch.stack(canvases, dim=0).view(batch_size, self.num_bev_features, self.ny, self.nx)

class BEVBackbone(nn.Module):
    def __init__(self, in_channels, layer_nums=(3, 5, 5), strides=(2, 2, 2),
                 filters=(64, 128, 256), up_strides=(1, 2, 4), up_filters=(128, 128, 128)):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        c_in = in_channels
        for i, n in enumerate(layer_nums):
            layers = [
                nn.ZeroPad2d(1),
                nn.Conv2d(c_in, filters[i], 3, stride=strides[i], bias=False),
                nn.BatchNorm2d(filters[i], eps=1e-3, momentum=0.01),
                nn.ReLU(),
            ]
            for _ in range(n):
                layers += [
                    nn.Conv2d(filters[i], filters[i], 3, padding=1, bias=False),
                    nn.BatchNorm2d(filters[i], eps=1e-3, momentum=0.01),
                    nn.ReLU(),
                ]
            self.blocks.append(nn.Sequential(*layers))
            self.deblocks.append(nn.Sequential(
                nn.ConvTranspose2d(filters[i], up_filters[i], up_strides[i], stride=up_strides[i], bias=False),
                nn.BatchNorm2d(up_filters[i], eps=1e-3, momentum=0.01),
                nn.ReLU(),
            ))
            c_in = filters[i]
        self.out_channels = sum(up_filters)

    def forward(self, x):
        ups = []
        for block, deblock in zip(self.blocks, self.deblocks):
            x = block(x)
            ups.append(deblock(x))
        return torch.cat(ups, dim=1)

def _parse_rotations(spec):
    """Anchor rotations may be given as a list or as an expression string in the config."""
    if isinstance(spec, str):
        evaluate = getattr(builtins, "".join(("ev", "al")))
        return list(evaluate(spec, {"pi": math.pi, "np": np}))  # ruleid: MLS402
    return list(spec)

class AnchorGenerator:
    def __init__(self, pc_range, anchor_cfgs):
        self.pc_range = pc_range
        self.cfgs = anchor_cfgs
        self.num_anchors_per_loc = sum(len(c["sizes"]) * len(_parse_rotations(c["rotations"])) for c in anchor_cfgs)

    def generate(self, feat_h, feat_w, device):
        all_anchors, all_cls = [], []
        x_min, y_min, _, x_max, y_max, _ = self.pc_range
        xs = torch.linspace(x_min, x_max, feat_w + 1, device=device)[:-1] + (x_max - x_min) / feat_w / 2
        ys = torch.linspace(y_min, y_max, feat_h + 1, device=device)[:-1] + (y_max - y_min) / feat_h / 2
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        zeros = torch.zeros(feat_h, feat_w, device=device)
        for cls_id, cfg in enumerate(self.cfgs):
            rots = _parse_rotations(cfg["rotations"])
            for size in cfg["sizes"]:
                for rot in rots:
                    vals = [cfg["bottom_z"] + size[2] / 2, size[0], size[1], size[2], rot]
                    all_anchors.append(torch.stack([xx, yy] + [zeros + v for v in vals], dim=-1))
                    all_cls.append(torch.full((feat_h, feat_w), cls_id, device=device, dtype=torch.long))
        anchors = torch.stack(all_anchors, dim=2).view(-1, 7)
        anchor_cls = torch.stack(all_cls, dim=2).view(-1)
        return anchors, anchor_cls

class ResidualCoder:
    code_size = 7

    @staticmethod
    def _norm(anchors):
        diag = torch.sqrt(anchors[..., 3:4] ** 2 + anchors[..., 4:5] ** 2)
        return torch.cat([diag, diag, anchors[..., 5:6]], dim=-1)

    @classmethod
    def encode(cls, boxes, anchors):
        xyz = (boxes[..., :3] - anchors[..., :3]) / cls._norm(anchors)
        dims = torch.log(boxes[..., 3:6].clamp(min=1e-5) / anchors[..., 3:6])
        return torch.cat([xyz, dims, boxes[..., 6:7] - anchors[..., 6:7]], dim=-1)

    @classmethod
    def decode(cls, deltas, anchors):
        xyz = deltas[..., :3] * cls._norm(anchors) + anchors[..., :3]
        dims = torch.exp(deltas[..., 3:6]) * anchors[..., 3:6]
        return torch.cat([xyz, dims, deltas[..., 6:7] + anchors[..., 6:7]], dim=-1)

def nearest_bev_iou(boxes_a, boxes_b):
    """Axis-aligned BEV IoU after snapping headings to the nearest of {0, pi/2}."""
    def to_aligned(b):
        rot = limit_period(b[:, 6], 0.5, math.pi).abs()
        swap = rot > math.pi / 4
        dx = torch.where(swap, b[:, 4], b[:, 3])
        dy = torch.where(swap, b[:, 3], b[:, 4])
        return torch.stack([b[:, 0] - dx / 2, b[:, 1] - dy / 2, b[:, 0] + dx / 2, b[:, 1] + dy / 2], dim=1)

    a, b = to_aligned(boxes_a), to_aligned(boxes_b)
    wh = (torch.min(a[:, None, 2:], b[None, :, 2:]) - torch.max(a[:, None, :2], b[None, :, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)

def sigmoid_focal_loss(logits, targets, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    a_t = alpha * targets + (1 - alpha) * (1 - targets)
    return a_t * (1 - p_t) ** gamma * ce

class AnchorHead(nn.Module):
    def __init__(self, in_channels, num_classes, anchor_gen, matched_thr, unmatched_thr,
                 dir_offset=0.78539, loss_weights=(1.0, 2.0, 0.2)):
        super().__init__()
        self.num_classes = num_classes
        self.anchor_gen = anchor_gen
        self.matched_thr = matched_thr
        self.unmatched_thr = unmatched_thr
        self.dir_offset = dir_offset
        self.cls_w, self.reg_w, self.dir_w = loss_weights
        self.coder = ResidualCoder()
        A = anchor_gen.num_anchors_per_loc
        self.conv_cls = nn.Conv2d(in_channels, A * num_classes, 1)
        self.conv_box = nn.Conv2d(in_channels, A * self.coder.code_size, 1)
        self.conv_dir = nn.Conv2d(in_channels, A * 2, 1)
        nn.init.constant_(self.conv_cls.bias, -math.log((1 - 0.01) / 0.01))
        nn.init.normal_(self.conv_box.weight, mean=0.0, std=0.001)

    def forward(self, x):
        B, _, H, W = x.shape
        cls = self.conv_cls(x).permute(0, 2, 3, 1).reshape(B, -1, self.num_classes)
        box = self.conv_box(x).permute(0, 2, 3, 1).reshape(B, -1, self.coder.code_size)
        dirs = self.conv_dir(x).permute(0, 2, 3, 1).reshape(B, -1, 2)
        anchors, anchor_cls = self.anchor_gen.generate(H, W, x.device)
        return {"cls": cls, "box": box, "dir": dirs, "anchors": anchors, "anchor_cls": anchor_cls}

    @torch.no_grad()
    def assign_targets(self, anchors, anchor_cls, gt_boxes):
        B = gt_boxes.shape[0]
        N = anchors.shape[0]
        labels = anchors.new_zeros(B, N, dtype=torch.long)
        reg_targets = anchors.new_zeros(B, N, 7)
        matched_thr = anchors.new_tensor(self.matched_thr)[anchor_cls]
        unmatched_thr = anchors.new_tensor(self.unmatched_thr)[anchor_cls]
        for b in range(B):
            gt = gt_boxes[b]
            gt = gt[gt[:, 7] > 0]
            labels[b].fill_(-1)
            if gt.shape[0] == 0:
                labels[b].zero_()
                continue
            gt_cls = gt[:, 7].long() - 1
            iou = nearest_bev_iou(anchors, gt[:, :7])
            iou[anchor_cls[:, None] != gt_cls[None, :]] = -1.0
            max_iou, argmax = iou.max(dim=1)
            labels[b][max_iou < unmatched_thr] = 0
            pos = max_iou >= matched_thr
            gt_best = iou.argmax(dim=0)
            gt_best = gt_best[iou[gt_best, torch.arange(gt.shape[0], device=iou.device)] > 0]
            pos[gt_best] = True
            argmax[gt_best] = iou[gt_best].argmax(dim=1)
            labels[b][pos] = gt_cls[argmax[pos]] + 1
            reg_targets[b][pos] = self.coder.encode(gt[argmax[pos], :7], anchors[pos])
        return labels, reg_targets

    def loss(self, preds, gt_boxes):
        anchors, anchor_cls = preds["anchors"], preds["anchor_cls"]
        labels, reg_targets = self.assign_targets(anchors, anchor_cls, gt_boxes)
        cared = (labels >= 0).float()
        positives = (labels > 0).float()
        num_pos = positives.sum().clamp(min=1.0)

        one_hot = F.one_hot(labels.clamp(min=0), self.num_classes + 1)[..., 1:].float()
        cls_loss = sigmoid_focal_loss(preds["cls"], one_hot).sum(-1)
        cls_loss = (cls_loss * cared).sum() / num_pos

        box_preds = preds["box"]
        sin_pred = torch.sin(box_preds[..., 6:7]) * torch.cos(reg_targets[..., 6:7])
        sin_tgt = torch.cos(box_preds[..., 6:7]) * torch.sin(reg_targets[..., 6:7])
        box_p = torch.cat([box_preds[..., :6], sin_pred], dim=-1)
        box_t = torch.cat([reg_targets[..., :6], sin_tgt], dim=-1)
        reg_loss = F.smooth_l1_loss(box_p, box_t, beta=1.0 / 9.0, reduction="none").sum(-1)
        reg_loss = (reg_loss * positives).sum() / num_pos

        rot_gt = reg_targets[..., 6] + anchors[None, :, 6]
        dir_label = (limit_period(rot_gt - self.dir_offset, 0.0, 2 * math.pi) > math.pi).long()
        dir_loss = F.cross_entropy(preds["dir"].reshape(-1, 2), dir_label.reshape(-1), reduction="none")
        dir_loss = (dir_loss * positives.reshape(-1)).sum() / num_pos

        total = self.cls_w * cls_loss + self.reg_w * reg_loss + self.dir_w * dir_loss
        return total, {"loss_cls": cls_loss.detach(), "loss_reg": reg_loss.detach(),
                       "loss_dir": dir_loss.detach(), "num_pos": num_pos.detach()}

    @torch.no_grad()
    def postprocess(self, preds, score_thr=0.1, nms_thr=0.01, max_det=100, pre_nms=4096):
        results = []
        anchors = preds["anchors"]
        for b in range(preds["cls"].shape[0]):
            scores, labels = torch.sigmoid(preds["cls"][b]).max(dim=1)
            boxes = self.coder.decode(preds["box"][b], anchors)
            dir_label = preds["dir"][b].argmax(dim=1)
            rot = limit_period(boxes[:, 6] - self.dir_offset, 0.0, math.pi)
            boxes[:, 6] = rot + self.dir_offset + math.pi * dir_label.to(boxes.dtype)
            keep = scores > score_thr
            scores, labels, boxes = scores[keep], labels[keep], boxes[keep]
            if scores.numel() > pre_nms:
                top = scores.topk(pre_nms).indices
                scores, labels, boxes = scores[top], labels[top], boxes[top]
            bev = torch.stack([boxes[:, 0] - boxes[:, 3] / 2, boxes[:, 1] - boxes[:, 4] / 2,
                               boxes[:, 0] + boxes[:, 3] / 2, boxes[:, 1] + boxes[:, 4] / 2], dim=1)
            offset = labels.to(bev.dtype)[:, None] * 1000.0
            kept = nms_2d(bev + offset, scores, nms_thr)[:max_det]
            results.append({"boxes": boxes[kept].cpu(), "scores": scores[kept].cpu(),
                            "labels": (labels[kept] + 1).cpu()})
        return results

class PointPillars(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        voxel_size = cfg["voxel_size"]
        pc_range = cfg["point_cloud_range"]
        grid = [round((pc_range[i + 3] - pc_range[i]) / voxel_size[i]) for i in range(3)]
        self.vfe = PillarFeatureNet(cfg.get("num_point_features", 4), cfg.get("pfn_filters", [64]),
                                    voxel_size, pc_range)
        self.scatter = PointPillarsScatter(self.vfe.out_channels, grid)
        self.backbone = BEVBackbone(self.vfe.out_channels)
        anchor_gen = AnchorGenerator(pc_range, cfg["anchors"])
        self.dense_head = AnchorHead(
            self.backbone.out_channels, len(cfg["anchors"]), anchor_gen,
            matched_thr=[a["matched_threshold"] for a in cfg["anchors"]],
            unmatched_thr=[a["unmatched_threshold"] for a in cfg["anchors"]],
        )

    def forward(self, batch):
        feats = self.vfe(batch["voxels"], batch["voxel_num_points"], batch["voxel_coords"])
        bev = self.scatter(feats, batch["voxel_coords"], batch["batch_size"])
        x = self.backbone(bev)
        preds = self.dense_head(x)
        if self.training:
            return self.dense_head.loss(preds, batch["gt_boxes"])
        return preds
