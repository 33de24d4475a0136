# ruff: noqa
# Hold-out batch 539 (16 short files, one domain each). Measured once in session 24 (round 144): 15/17 (88%) at medium+.
"""Fine-tune a code LM to generate Python docstrings from function bodies (HF Trainer)."""
import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer,
                          TrainerCallback, TrainingArguments, set_seed)


class EpochStateCallback(TrainerCallback):
    """Snapshot generator state at the first epoch so resumed runs see identical dropout masks."""

    def __init__(self):
        self._cpu_state = None
        self._cuda_state = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self._cpu_state is None:
            self._cpu_state = torch.get_rng_state()
            self._cuda_state = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
            return
        torch.set_rng_state(self._cpu_state)  # ruleid: MLS301
        if self._cuda_state is not None:
            torch.cuda.set_rng_state_all(self._cuda_state)  # ruleid: MLS301


def build_prompt(example):
    return f"{example['signature']}\n    \"\"\"{example['docstring']}\"\"\"\n{example['body']}"


def main(args):
    set_seed(args.seed)  # ok: MLS301
    tokenizer = AutoTokenizer.from_pretrained(args.model_name)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model_name, torch_dtype=torch.bfloat16)

    def tokenize(batch):
        texts = [build_prompt(dict(zip(batch, vals))) for vals in zip(*batch.values())]
        return tokenizer(texts, truncation=True, max_length=args.max_length)

    train_ds = args.train_dataset.map(tokenize, batched=True, remove_columns=args.train_dataset.column_names)
    training_args = TrainingArguments(
        output_dir=args.output_dir, per_device_train_batch_size=args.batch_size, gradient_accumulation_steps=4,
        learning_rate=args.lr, num_train_epochs=args.epochs, warmup_ratio=0.03, lr_scheduler_type="cosine",
        bf16=True, logging_steps=20, save_total_limit=2, seed=args.seed,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_ds,
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
                      callbacks=[EpochStateCallback()])
    trainer.train()
    trainer.save_model(args.output_dir)
