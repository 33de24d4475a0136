# ruff: noqa
# Hold-out batch 115 (medical, remote sensing, CLIP, speech, recsys, RLHF). Measured once in session 4 (round 38): 13/17 (76%) at medium+.
"""Direct Preference Optimization with an EMA-updated reference policy, launched with accelerate."""
import signal
import subprocess

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed


def git_commit():
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()  # ok: MLS411, MLS412


def seq_logps(model, ids, mask, labels):
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
    labels = labels[:, 1:]
    logps = torch.gather(logits.log_softmax(-1), 2, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logps * (labels != -100)).sum(-1)


def dpo_loss(pc, pr, rc, rr, beta=0.1, label_smoothing=0.05):
    z = beta * ((pc - rc) - (pr - rr))
    return (-F.logsigmoid(z) * (1 - label_smoothing) - F.logsigmoid(-z) * label_smoothing).mean()  # ok: MLS309


@torch.no_grad()
def ema_update(ref, policy, decay=0.99):
    for p_ref, p in zip(ref.parameters(), policy.parameters()):
        p_ref.data.mul_(decay).add_(p.data, alpha=1 - decay)  # ok: MLS302, MLS303, MLS304, MLS305


def train(policy, ref, loader, args):
    set_seed(args.seed)  # ok: MLS301
    acc = Accelerator(gradient_accumulation_steps=args.accum, log_with="wandb")
    acc.init_trackers("dpo", config={**vars(args), "commit": git_commit()})
    opt = torch.optim.AdamW(policy.parameters(), lr=args.lr)
    policy, ref, opt, loader = acc.prepare(policy, ref, opt, loader)
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))  # ok: MLS307
    for step, b in enumerate(loader):
        with acc.accumulate(policy):
            pc = seq_logps(policy, b["chosen_ids"], b["chosen_mask"], b["chosen_labels"])
            pr = seq_logps(policy, b["rejected_ids"], b["rejected_mask"], b["rejected_labels"])
            with torch.no_grad():
                rc = seq_logps(ref, b["chosen_ids"], b["chosen_mask"], b["chosen_labels"])
                rr = seq_logps(ref, b["rejected_ids"], b["rejected_mask"], b["rejected_labels"])
            loss = dpo_loss(pc, pr, rc, rr, beta=args.beta)
            acc.backward(loss)
            if acc.sync_gradients:
                acc.clip_grad_norm_(policy.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
        if acc.sync_gradients and step % args.ref_sync_every == 0:
            ema_update(acc.unwrap_model(ref), acc.unwrap_model(policy))
        acc.log({"train/loss": loss.item(), "train/margin": (pc - pr - rc + rr).mean().item()}, step=step)
        if stop["flag"] or step + 1 == args.max_steps:
            break
    acc.wait_for_everyone()
    acc.save_state(args.output_dir)
    acc.end_training()
