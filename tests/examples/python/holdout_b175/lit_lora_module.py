# ruff: noqa
# Hold-out batch 175 (short files, LLM fine-tuning tooling). Measured once in session 6 (round 53): 13/17 (76%) at medium+.
"""Lightning wrapper for LoRA fine-tuning of a causal language model."""
import argparse

import pytorch_lightning as pl
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup


class LoRAFineTuner(pl.LightningModule):
    def __init__(self, model_name, lr=2e-4, r=16, warmup=100, seed=17):
        super().__init__()
        self.save_hyperparameters()
        base = AutoModelForCausalLM.from_pretrained(model_name, torch_dtype=torch.bfloat16)
        cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05,
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                         task_type="CAUSAL_LM")
        self.model = get_peft_model(base, cfg)

    def training_step(self, batch, batch_idx):
        out = self.model(**batch)
        self.log("train/loss", out.loss, prog_bar=True, sync_dist=True)
        return out.loss

    def validation_step(self, batch, batch_idx):
        out = self.model(**batch)
        self.log("val/loss", out.loss, sync_dist=True)

    def on_train_batch_start(self, batch, batch_idx):
        # keep dropout masks reproducible within an accumulation window
        if batch_idx % self.trainer.accumulate_grad_batches == 0:
            torch.manual_seed(self.hparams.seed + self.current_epoch)  # ruleid: MLS301

    def configure_optimizers(self):
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=0.0)
        total = self.trainer.estimated_stepping_batches
        sched = get_cosine_schedule_with_warmup(opt, self.hparams.warmup, total)  # ok: MLS302, MLS303, MLS304, MLS305
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="meta-llama/Llama-2-7b-hf")
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    pl.seed_everything(args.seed, workers=True)  # ok: MLS301
    module = LoRAFineTuner(args.model, seed=args.seed)
    trainer = pl.Trainer(max_epochs=args.epochs, precision="bf16-mixed", gradient_clip_val=1.0,  # ok: MLS302, MLS303, MLS304, MLS305
                         accumulate_grad_batches=8, devices="auto", log_every_n_steps=10)
    from data_module import SFTDataModule
    trainer.fit(module, datamodule=SFTDataModule(args.model))


if __name__ == "__main__":
    main()
