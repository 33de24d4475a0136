# ruff: noqa
# Hold-out batch 355 (16 short files). Measured once in session 13 (round 98): 14/17 (82%) at medium+.
"""Logit + hint (FitNets) distillation from a ResNet-152 teacher into a MobileNetV3 student."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def load_teacher(teacher: nn.Module, path: str) -> nn.Module:
    state = torch.load(path, map_location="cpu", weights_only=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    teacher.load_state_dict(state.get("model", state))
    return teacher.eval().requires_grad_(False)


class Distiller(nn.Module):
    def __init__(self, student, teacher, s_layer, t_layer, s_ch, t_ch, T=4.0, alpha=0.7, beta=50.0):
        super().__init__()
        self.student, self.teacher = student, teacher
        self.T, self.alpha, self.beta = T, alpha, beta
        self.regressor = nn.Conv2d(s_ch, t_ch, kernel_size=1, bias=False)
        self._feats = {}
        s_layer.register_forward_hook(self._capture("student"))  # ruleid: MLS303
        t_layer.register_forward_hook(self._capture("teacher"))  # ruleid: MLS303

    def _capture(self, key):
        def hook(module, inputs, output):
            self._feats[key] = output
            return output.detach()  # ruleid: MLS303
        return hook

    def forward(self, images, labels):
        with torch.no_grad():
            t_logits = self.teacher(images)
        s_logits = self.student(images)
        ce = F.cross_entropy(s_logits, labels)
        kd = F.kl_div(F.log_softmax(s_logits / self.T, dim=1),
                      F.softmax(t_logits / self.T, dim=1), reduction="batchmean") * self.T ** 2
        s_feat = self.regressor(self._feats["student"])
        t_feat = self._feats["teacher"]
        if s_feat.shape[-2:] != t_feat.shape[-2:]:
            s_feat = F.interpolate(s_feat, size=t_feat.shape[-2:], mode="bilinear", align_corners=False)
        hint = F.mse_loss(s_feat, t_feat)
        loss = (1 - self.alpha) * ce + self.alpha * kd + self.beta * hint
        return loss, {"ce": ce.item(), "kd": kd.item(), "hint": hint.item()}


def train_one_epoch(distiller, loader, optimizer, scheduler, device):
    distiller.student.train()
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss, parts = distiller(images, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return parts
