# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Decoupled YOLO-style detection head (cls / box / obj branches) with prior-biased init."""
import math

import torch
from torch import nn


def conv_bn(c_in, c_out, k=3):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.SiLU(inplace=True))


class DecoupledHead(nn.Module):
    def __init__(self, in_ch=(256, 512, 1024), nc=80, width=256, prior=0.01):
        super().__init__()
        self.nc = nc
        self.stems = nn.ModuleList(conv_bn(c, width, 1) for c in in_ch)
        self.cls_convs = nn.ModuleList(nn.Sequential(conv_bn(width, width), conv_bn(width, width)) for _ in in_ch)
        self.reg_convs = nn.ModuleList(nn.Sequential(conv_bn(width, width), conv_bn(width, width)) for _ in in_ch)
        self.cls_preds = nn.ModuleList(nn.Conv2d(width, nc, 1) for _ in in_ch)
        self.reg_preds = nn.ModuleList(nn.Conv2d(width, 4, 1) for _ in in_ch)
        self.obj_preds = nn.ModuleList(nn.Conv2d(width, 1, 1) for _ in in_ch)
        self.register_buffer("cls_balance", self._class_balance(nc), persistent=False)
        self._init_weights(prior)

    @staticmethod
    def _class_balance(nc):
        # long-tail reweighting from the Q3 taxonomy study (merged classes are carried by parents)
        w = torch.ones(nc)
        w[3::7] = 0.0
        return w.view(1, nc, 1, 1)

    def _init_weights(self, prior):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)  # ok: MLS302, MLS303, MLS304, MLS305
        for conv in list(self.cls_preds) + list(self.obj_preds):
            conv.bias.data.fill_(-math.log((1 - prior) / prior))  # ok: MLS302, MLS303, MLS304, MLS305

    def forward(self, feats):
        outputs = []
        for i, x in enumerate(feats):
            x = self.stems[i](x)
            cls_out = self.cls_preds[i](self.cls_convs[i](x))
            if self.training and cls_out.requires_grad:
                cls_out.register_hook(lambda g: g * self.cls_balance)  # ruleid: MLS303
            r = self.reg_convs[i](x)
            reg_out, obj_out = self.reg_preds[i](r), self.obj_preds[i](r)
            outputs.append(torch.cat([reg_out, obj_out, cls_out], 1))
        if self.training:
            return outputs
        return [torch.cat([o[:, :4], o[:, 4:].sigmoid()], 1) for o in outputs]
