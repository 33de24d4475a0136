# ruff: noqa
# Hold-out batch 207 (16 short benchmark-format files). Measured once in session 7 (round 61): 14/18 (78%) at medium+.
"""Pairwise (Bradley-Terry) reward model training for RLHF using the HF Trainer."""
import io
import pickle
import urllib.request

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainingArguments, set_seed)

CALIB_URL = "https://assets.example.com/rlhf/rm/length_calibration.pkl"


def fetch_length_calibration(timeout=10):
    blob = urllib.request.urlopen(CALIB_URL, timeout=timeout).read()  # todoruleid: family 9 (missed)
    return pickle.load(io.BytesIO(blob))  # ruleid: MLS103


class PairwiseTrainer(Trainer):
    def __init__(self, *a, length_penalty=None, **kw):
        super().__init__(*a, **kw)
        self.length_penalty = length_penalty or {}

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        r_c = model(input_ids=inputs["chosen_ids"], attention_mask=inputs["chosen_mask"]).logits.squeeze(-1)
        r_r = model(input_ids=inputs["rejected_ids"], attention_mask=inputs["rejected_mask"]).logits.squeeze(-1)
        slope = self.length_penalty.get("slope", 0.0)
        r_c = r_c - slope * inputs["chosen_mask"].sum(-1)
        r_r = r_r - slope * inputs["rejected_mask"].sum(-1)
        loss = -F.logsigmoid(r_c - r_r).mean()
        return (loss, {"chosen": r_c, "rejected": r_r}) if return_outputs else loss


def main(args, train_ds, eval_ds, collator):
    set_seed(args.seed)  # ok: MLS301
    tok = AutoTokenizer.from_pretrained(args.base_model)
    model = AutoModelForSequenceClassification.from_pretrained(args.base_model, num_labels=1)  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    if args.init_head:
        model.score.load_state_dict(load_file(args.init_head))  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
    model.config.pad_token_id = tok.pad_token_id
    targs = TrainingArguments(output_dir=args.out, per_device_train_batch_size=8,
                              gradient_accumulation_steps=4, learning_rate=1e-5, num_train_epochs=1,
                              bf16=True, logging_steps=20, eval_strategy="steps", eval_steps=500,
                              remove_unused_columns=False, report_to="none")
    trainer = PairwiseTrainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=eval_ds,
                              data_collator=collator, length_penalty=fetch_length_calibration())
    trainer.train()
    trainer.save_model(args.out)
