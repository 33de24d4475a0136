# ruff: noqa
# Hold-out batch 120 (generative, self-supervised, compression). Measured once in session 4 (round 39): 16/18 (89%) at medium+, three benign lines flagged.
"""Causal-LM distillation (gpt2-medium -> distilgpt2) with a custom HF Trainer."""
import torch
import torch.nn.functional as F
from transformers import (AutoModelForCausalLM, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)


class DistillTrainer(Trainer):
    def __init__(self, *args, teacher=None, temperature=2.0, alpha=0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)  # ok: MLS302, MLS303, MLS304, MLS305
        self.temperature = temperature
        self.alpha = alpha

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        out = model(**inputs)
        with torch.no_grad():
            t_logits = self.teacher(**{k: v for k, v in inputs.items() if k != "labels"}).logits
        T = self.temperature
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        kd = F.kl_div(F.log_softmax(out.logits / T, -1), F.softmax(t_logits / T, -1),
                      reduction="none").sum(-1, keepdim=True)
        kd = (kd * mask).sum() / mask.sum() * T * T
        loss = self.alpha * kd + (1 - self.alpha) * out.loss
        if self.state.global_step % self.args.logging_steps == 0 and self.model.training:
            self.log({"kd_loss": kd.item(), "lm_loss": out.loss.item()})  # ok: MLS306
        return (loss, out) if return_outputs else loss


def build(args, train_ds, eval_ds, collator):
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained("distilgpt2")
    tok.pad_token = tok.eos_token
    teacher = AutoModelForCausalLM.from_pretrained("gpt2-medium", torch_dtype=torch.bfloat16,  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
                                                   trust_remote_code=False)
    student = AutoModelForCausalLM.from_pretrained("distilgpt2", use_safetensors=True)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    targs = TrainingArguments(
        output_dir=args.out,
        per_device_train_batch_size=16,
        gradient_accumulation_steps=4,
        learning_rate=5e-4,
        lr_scheduler_type="cosine",
        warmup_ratio=0.03,
        max_grad_norm=1.0,
        bf16=True,
        logging_steps=50,
        save_strategy="steps",
        save_steps=2000,
        seed=args.seed,
        report_to=["tensorboard"],
    )
    targs.label_smoothing_factor = 0.05  # ok: MLS309
    return DistillTrainer(model=student, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
                          data_collator=collator, teacher=teacher.to(args.device))
