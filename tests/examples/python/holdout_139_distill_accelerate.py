# ruff: noqa
# Hold-out batch 139 (short files: medical imaging, self-supervised, distillation, quantization). Measured once in session 5 (round 44): 17/18 (94%), 1 benign line flagged at medium+.
"""Feature distillation from a ViT-B/16 teacher into a ResNet-50 student with accelerate."""
import argparse

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from safetensors.torch import load_file
from torchvision import transforms as T
from torchvision.datasets import ImageFolder


def load_teacher(path):
    teacher = timm.create_model("vit_base_patch16_224", num_classes=0)
    if path.endswith(".safetensors"):
        sd = load_file(path)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    else:
        sd = torch.load(path, map_location="cpu")  # ruleid: MLS102
    sd = sd.get("model", sd)
    teacher.load_state_dict(sd, strict=False)
    return teacher.eval().requires_grad_(False)


def build_student(init_path=None):
    student = timm.create_model("resnet50", num_classes=0)
    if init_path:
        student.load_state_dict(torch.load(init_path, map_location="cpu", weights_only=True))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    return student


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student_init", default=None)
    ap.add_argument("--data", default="/data/imagenet/train")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    accelerator = Accelerator(mixed_precision="bf16", gradient_accumulation_steps=4)
    set_seed(args.seed)  # ok: MLS301
    teacher, student = load_teacher(args.teacher), build_student(args.student_init)
    proj = nn.Linear(2048, 768)
    opt = torch.optim.AdamW(list(student.parameters()) + list(proj.parameters()), lr=5e-4, weight_decay=0.05)
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    loader = torch.utils.data.DataLoader(ImageFolder(args.data, tf), batch_size=64, shuffle=True,
                                         num_workers=8, drop_last=True)
    student, proj, opt, loader, teacher = accelerator.prepare(student, proj, opt, loader, teacher)

    for epoch in range(args.epochs):
        for x, _ in loader:
            with accelerator.accumulate(student):
                with torch.no_grad():
                    t_feat = teacher(x)
                loss = 1 - F.cosine_similarity(proj(student(x)), t_feat, dim=-1).mean()
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(student.parameters(), 1.0)  # ok: MLS302, MLS303, MLS304, MLS305
                opt.step()
                opt.zero_grad()
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            accelerator.save(accelerator.unwrap_model(student).state_dict(), f"student_ep{epoch}.pt")


if __name__ == "__main__":
    main()
