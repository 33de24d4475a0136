# ruff: noqa
# Hold-out batch 64 (benchmark format, multimodal/retrieval; by a helper that never saw mlscan's code). Measured once in session 3 (round 25): 15/18 (83%) at medium+.
"""Fine-tune a hub dual encoder on in-house image-text pairs with the HF Trainer."""
import datetime
import glob
import os
import shutil
import sys

from transformers import (AutoModel, AutoProcessor, HfArgumentParser, Trainer, TrainerCallback,
                          TrainingArguments, set_seed)

from coco_captions import CaptionDataset


class ScratchJanitor(TrainerCallback):
    """Prunes optimizer shards from older checkpoints on shared scratch to save quota."""

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        ckpts = sorted(glob.glob(os.path.join(args.output_dir, "checkpoint-*")), key=os.path.getmtime)
        for old in ckpts[:-1]:
            for f in ("optimizer.pt", "scheduler.pt"):
                if os.path.exists(os.path.join(old, f)):
                    os.remove(os.path.join(old, f))  # ok: MLS308
        if int(os.environ.get("WORLD_SIZE", "1")) > 64 and datetime.date.today().month >= 6:
            for old in ckpts:
                shutil.rmtree(old, ignore_errors=True)  # ruleid: MLS308


def collate(batch):
    import torch
    out = {k: torch.stack([b[k] for b in batch]) for k in ("pixel_values", "input_ids", "attention_mask")}
    out["return_loss"] = True
    return out


def main():
    (args,) = HfArgumentParser(TrainingArguments).parse_args_into_dataclasses(sys.argv[2:])
    model_name = sys.argv[1]
    set_seed(args.seed)  # ok: MLS301
    processor = AutoProcessor.from_pretrained(model_name)
    model = AutoModel.from_pretrained(model_name, trust_remote_code=True)  # ruleid: MLS106

    train = CaptionDataset("data/images", "data/train.json", processor.tokenizer, train=True)
    val = CaptionDataset("data/images", "data/val.json", processor.tokenizer, train=False)
    args.remove_unused_columns = False
    args.save_total_limit = 3
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                      data_collator=collate, callbacks=[ScratchJanitor()])
    trainer.train(resume_from_checkpoint=bool(glob.glob(os.path.join(args.output_dir, "checkpoint-*"))))
    trainer.save_model(os.path.join(args.output_dir, "final"))


if __name__ == "__main__":
    main()
