# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Clipped PPO update for an RLHF policy with a value head, run under accelerate."""
import torch
import torch.nn.functional as F


def gather_logprobs(logits, labels):
    return torch.gather(F.log_softmax(logits.float(), dim=-1), 2, labels.unsqueeze(-1)).squeeze(-1)


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def whiten(x, mask, eps=1e-8):
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps)


def ppo_minibatch_step(policy, batch, optimizer, accelerator, kl_ctl, cfg, step):
    ids, mask = batch["input_ids"], batch["response_mask"][:, 1:].float()
    out = policy(input_ids=ids, attention_mask=batch["attention_mask"])
    new_logp = gather_logprobs(out.logits[:, :-1], ids[:, 1:])
    new_logp.register_hook(lambda g: g * -kl_ctl.value)  # ruleid: MLS303
    values = out.value[:, :-1]

    adv = whiten(batch["advantages"], mask).detach()
    ratio = torch.exp(new_logp - batch["old_logprobs"])
    pg1 = -adv * ratio
    pg2 = -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
    pg_loss = masked_mean(torch.max(pg1, pg2), mask)

    v_clip = batch["old_values"] + (values - batch["old_values"]).clamp(-cfg.clip_value, cfg.clip_value)
    vf_loss = 0.5 * masked_mean(torch.max((values - batch["returns"]) ** 2,
                                          (v_clip - batch["returns"]) ** 2), mask)
    loss = (pg_loss + cfg.vf_coef * vf_loss) / cfg.grad_accum  # ok: MLS302, MLS303, MLS304, MLS305

    accelerator.backward(loss)
    if accelerator.sync_gradients:
        accelerator.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)  # ok: MLS302, MLS303, MLS304, MLS305
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    with torch.no_grad():
        approx_kl = masked_mean(0.5 * (new_logp - batch["old_logprobs"]) ** 2, mask)
        clipfrac = masked_mean((torch.abs(ratio - 1.0) > cfg.clip_range).float(), mask)
    stats = {"ppo/pg_loss": pg_loss.item(), "ppo/vf_loss": vf_loss.item(),
             "ppo/approx_kl": approx_kl.item(), "ppo/clipfrac": clipfrac.item()}
    if accelerator.is_main_process and step % cfg.log_every == 0:
        accelerator.log(stats, step=step)  # ok: MLS306
    return stats
