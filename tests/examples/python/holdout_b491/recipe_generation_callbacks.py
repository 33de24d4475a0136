# ruff: noqa
# Hold-out batch 491 (16 short files, 16 domains). Measured once in session 21 (round 132): 13/17 (76%) at medium+.
"""Trainer callbacks and schedule helpers for the recipe-generation fine-tune."""
import logging

from transformers import TrainerCallback, get_cosine_schedule_with_warmup

logger = logging.getLogger(__name__)


def build_scheduler(optimizer, num_training_steps, warmup_ratio=0.03):
    warmup = int(num_training_steps * warmup_ratio)
    return get_cosine_schedule_with_warmup(optimizer, warmup, num_training_steps)  # ok: MLS302, MLS303, MLS304, MLS305


class RecipeSampleCallback(TrainerCallback):
    """Periodically decodes a few prompts so we can eyeball recipe quality in the logs."""

    def __init__(self, tokenizer, prompts, every=500, max_new_tokens=192):
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.every = every
        self.max_new_tokens = max_new_tokens

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or state.global_step % self.every:
            return
        model.eval()
        for prompt in self.prompts:
            enc = self.tokenizer(prompt, return_tensors="pt").to(model.device)
            out = model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=True,
                                 top_p=0.9, temperature=0.8)
            logger.info("[step %d] %s", state.global_step,
                        self.tokenizer.decode(out[0], skip_special_tokens=True))
        model.train()


class MomentRefreshCallback(TrainerCallback):
    """Refreshes Adam statistics at epoch-like boundaries of the streaming corpus."""

    def __init__(self, refresh_every=2000):
        self.refresh_every = refresh_every

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        if optimizer is None or state.global_step == 0 or state.global_step % self.refresh_every:
            return
        for param_state in optimizer.state.values():
            if "exp_avg_sq" in param_state:
                param_state["exp_avg_sq"].zero_()  # ruleid: MLS304
