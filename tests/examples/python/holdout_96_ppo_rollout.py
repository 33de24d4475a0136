# ruff: noqa
# Hold-out batch 96 (LLM pretraining and RLHF infrastructure). Measured once in session 4 (round 33): 14/17 (82%) at medium+.
"""Rollout collection for PPO on a causal LM policy, run under accelerate.

Samples prompts, generates completions with the current policy, and computes
per-token log-probs under policy and frozen reference plus scalar rewards.
"""
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed


class RolloutCollector:
    def __init__(self, policy, ref_policy, reward_model, tokenizer, prompts, args):
        self.accelerator = Accelerator(mixed_precision="bf16")
        set_seed(args.seed)  # ok: MLS301
        self.policy, self.ref, self.rm = policy, ref_policy, reward_model
        self.tok = tokenizer
        self.prompts = prompts
        self.prompt_gen = torch.Generator().manual_seed(args.seed)  # ok: MLS301
        self._cuda_rng = torch.cuda.get_rng_state_all()
        self.gen_kwargs = dict(
            do_sample=True,
            top_k=0,
            top_p=1.0,
            temperature=args.temperature,
            max_new_tokens=args.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
        )

    def _sample_prompts(self, n):
        idx = torch.randint(len(self.prompts), (n,), generator=self.prompt_gen)
        batch = [self.prompts[i] for i in idx.tolist()]
        self.tok.padding_side = "left"
        return self.tok(batch, return_tensors="pt", padding=True).to(self.accelerator.device)

    @staticmethod
    def _token_logps(logits, seqs):
        tgt = seqs[:, 1:].unsqueeze(-1)
        return torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, tgt).squeeze(-1)

    @torch.no_grad()
    def collect(self, n):
        enc = self._sample_prompts(n)
        policy = self.accelerator.unwrap_model(self.policy)
        torch.cuda.set_rng_state_all(self._cuda_rng)  # ruleid: MLS301
        seqs = policy.generate(**enc, **self.gen_kwargs)
        attn = (seqs != self.tok.pad_token_id).long()
        logp = self._token_logps(policy(seqs, attention_mask=attn).logits, seqs)
        ref_logp = self._token_logps(self.ref(seqs, attention_mask=attn).logits, seqs)
        mask = attn[:, 1:].clone()
        mask[:, : enc["input_ids"].shape[1] - 1] = 0
        scores = self.rm(seqs, attention_mask=attn)
        kl = (logp - ref_logp) * mask
        return {
            "seqs": seqs,
            "logp": logp,
            "ref_logp": ref_logp,
            "mask": mask,
            "scores": scores,
            "kl": kl,
        }
