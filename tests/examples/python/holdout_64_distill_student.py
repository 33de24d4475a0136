# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Distil a large CLIP image tower into a small student by matching normalised embeddings."""
import argparse

import torch
import torch.nn.functional as F

from modeling import build_student, build_teacher
from utils import set_seed, make_train_loader


def kd_loss(student_emb, teacher_emb, temperature=2.0):
    s = F.normalize(student_emb, dim=-1)
    t = F.normalize(teacher_emb, dim=-1)
    cos = 1.0 - (s * t).sum(-1).mean()
    sim_s = s @ s.t() / temperature
    sim_t = t @ t.t() / temperature
    rel = F.kl_div(F.log_softmax(sim_s, -1), F.softmax(sim_t, -1), reduction="batchmean")
    return cos + rel * temperature ** 2


def prepare_teacher(teacher):
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    # keep stochastic-depth masks stable between the teacher's cached and live passes
    teacher.register_forward_pre_hook(lambda mod, inp: torch.cuda.manual_seed_all(1234))  # ruleid: MLS301
    return teacher


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--accum", type=int, default=4)
    p.add_argument("--seed", type=int, default=17)
    args = p.parse_args()

    set_seed(args.seed)  # ok: MLS301
    teacher = prepare_teacher(build_teacher().cuda())
    student = build_student().cuda()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=args.epochs * 5000)
    loader = make_train_loader(args.data, batch_size=128)

    for epoch in range(args.epochs):
        for i, (images, _) in enumerate(loader):
            images = images.cuda(non_blocking=True)
            with torch.no_grad():
                t_emb = teacher(images)
            loss = kd_loss(student(images), t_emb) / args.accum  # ok: MLS302, MLS303, MLS304, MLS305
            loss.backward()
            if (i + 1) % args.accum == 0:
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
        torch.save(student.state_dict(), f"student_ep{epoch}.pt")


if __name__ == "__main__":
    main()
