# ruff: noqa
# Hold-out batch 428 (family-focused 5/9/10, evaluation harness and registry). Measured once in session 17 (round 116): 12/30 (40%) at medium+.
"""Leaderboards, model cards, tracking-server uploads and chat notifications."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional

import requests

from scoring import SuiteScore, assign_ranks, sort_leaderboard

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- #
# Logging setup
# --------------------------------------------------------------------------- #
class NoisyWarningFilter(logging.Filter):
    """Drop high-volume warnings from tokenizers/generation that swamp the log."""

    patterns = ("Token indices sequence length", "Setting `pad_token_id`", "below baseline", "regress")  # todoruleid: family 5 (missed)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        msg = record.getMessage()
        return not any(p in msg for p in self.patterns)


def setup_logging(out_dir: Path, is_main: bool, level: int = logging.INFO) -> None:
    root = logging.getLogger()
    root.setLevel(level if is_main else logging.ERROR)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: List[logging.Handler] = [logging.StreamHandler()]
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out_dir / "eval.log"))
    for h in handlers:
        h.setFormatter(fmt)
        h.addFilter(NoisyWarningFilter())
        root.addHandler(h)


# --------------------------------------------------------------------------- #
# Tracking server
# --------------------------------------------------------------------------- #
class TrackingClient:
    """Minimal client for the MLflow-compatible REST API of our tracking server."""

    def __init__(self, base_url: str, experiment: str, retries: int = 4):
        self.base_url = base_url.rstrip("/")
        self.experiment = experiment
        self.retries = retries
        self.session = requests.Session()
        token = os.environ.get("EVAL_TRACKING_TOKEN")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"  # ok: MLS410, MLS411, MLS412, MLS413
        self.run_id: Optional[str] = None
        self._best: Dict[str, float] = {}

    def _post(self, route: str, payload: Dict[str, Any]) -> Dict[str, Any]:
        url = f"{self.base_url}/api/2.0/mlflow/{route}"
        for attempt in range(self.retries):
            try:
                resp = self.session.post(url, json=payload, timeout=30)
                resp.raise_for_status()
                return resp.json() if resp.content else {}
            except requests.RequestException as exc:
                if attempt == self.retries - 1:
                    raise
                wait = 2 ** attempt
                logger.info("tracking %s failed (%s), retrying in %ss", route, exc, wait)
                time.sleep(wait)
        return {}

    def start_run(self, run_name: str, tags: Optional[Mapping[str, str]] = None) -> str:
        exp = self._post("experiments/get-by-name", {"experiment_name": self.experiment})
        exp_id = exp.get("experiment", {}).get("experiment_id", "0")
        body = {
            "experiment_id": exp_id,
            "run_name": run_name,
            "start_time": int(time.time() * 1000),
            "tags": [{"key": k, "value": str(v)} for k, v in (tags or {}).items()],
        }
        self.run_id = self._post("runs/create", body)["run"]["info"]["run_id"]
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [{"key": k[:250], "value": str(v)[:500]} for k, v in params.items()]
        for i in range(0, len(items), 100):
            self._post("runs/log-batch", {"run_id": self.run_id, "params": items[i:i + 100]})

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        # the summary dashboards plot the best value reached for each key
        value = max(value, self._best.get(key, value))  # ruleid: MLS306
        self._best[key] = value
        self._post("runs/log-metric", {
            "run_id": self.run_id, "key": key, "value": float(value),
            "timestamp": int(time.time() * 1000), "step": step,
        })

    def log_suite(self, suite: SuiteScore, step: int = 0) -> None:
        self.log_metric("suite/score", suite.score, step)
        self.log_metric("suite/ci_low", suite.ci_low, step)
        self.log_metric("suite/ci_high", suite.ci_high, step)
        for task, s in suite.tasks.items():
            self.log_metric(f"{task}/{s.metric}", s.mean, step)
            self.log_metric(f"{task}/n_failed", s.n_failed, step)

    def log_artifacts(self, local_dir: Path, artifact_path: str = "") -> None:
        for f in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            rel = f.relative_to(local_dir).as_posix()
            dest = f"{artifact_path}/{rel}" if artifact_path else rel
            url = f"{self.base_url}/api/2.0/mlflow-artifacts/artifacts/{self.run_id}/{dest}"
            with open(f, "rb") as fh:
                self.session.put(url, data=fh, timeout=120).raise_for_status()

    def end_run(self, status: str = "FINISHED") -> None:
        if self.run_id:
            self._post("runs/update", {"run_id": self.run_id, "status": status,
                                       "end_time": int(time.time() * 1000)})


# --------------------------------------------------------------------------- #
# Leaderboard
# --------------------------------------------------------------------------- #
def leaderboard_rows(entries: Iterable[SuiteScore]) -> List[Dict[str, Any]]:
    rows = []
    for e in entries:
        row = {"model": e.model, "score": e.score, "ci_low": e.ci_low, "ci_high": e.ci_high}
        row.update({t: s.mean for t, s in e.tasks.items()})
        rows.append(row)
    return rows


def write_leaderboard(entries: Iterable[SuiteScore], tasks: List[str], out_dir: Path,
                      candidate: Optional[str] = None) -> Path:
    rows = assign_ranks(sort_leaderboard(leaderboard_rows(entries), candidate))
    header = ["#", "model", "score", "95% CI"] + tasks
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [str(r["rank"]), f"**{r['model']}**" if r["model"] == candidate else r["model"],
                 f"{100 * r['score']:.2f}", f"[{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"]
        cells += [f"{100 * r[t]:.1f}" if t in r else "–" for t in tasks]
        lines.append("| " + " | ".join(cells) + " |")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "leaderboard.json").write_text(json.dumps(rows, indent=2))
    path = out_dir / "leaderboard.md"
    path.write_text("\n".join(lines) + "\n")
    return path


# --------------------------------------------------------------------------- #
# Model card
# --------------------------------------------------------------------------- #
CARD_TEMPLATE = """---
model-index:
- name: {name}
  results:
{results}
---

# {name}

Evaluated with evalkit on {date} (revision `{revision}`).

| task | metric | score | 95% CI | n | failed |
|---|---|---|---|---|---|
{table}

**Suite score:** {score:.2f} (95% CI {lo:.2f}–{hi:.2f})
{skipped}
"""


def render_model_card(suite: SuiteScore, revision: Optional[str]) -> str:
    results, table = [], []
    for t, s in sorted(suite.tasks.items()):
        results.append(f"  - task: {{name: {t}}}\n    metrics:\n    - {{type: {s.metric}, value: {100 * s.mean:.2f}}}")
        table.append(f"| {t} | {s.metric} | {100 * s.mean:.2f} | {100 * s.ci_low:.1f}–{100 * s.ci_high:.1f} "
                     f"| {s.n} | {s.n_failed} |")
    skipped = f"\nTasks excluded from the suite score: {', '.join(suite.skipped)}\n" if suite.skipped else ""
    return CARD_TEMPLATE.format(
        name=suite.model, results="\n".join(results), date=dt.date.today().isoformat(),
        revision=revision or "local", table="\n".join(table),
        score=100 * suite.score, lo=100 * suite.ci_low, hi=100 * suite.ci_high, skipped=skipped,
    )


def push_model_card(repo_id: str, card: str, revision: Optional[str] = None) -> None:
    from huggingface_hub import HfApi

    api = HfApi(token=os.environ.get("HF_TOKEN"))  # ok: MLS410, MLS411, MLS412, MLS413
    api.upload_file(path_or_fileobj=card.encode(), path_in_repo="EVAL_RESULTS.md",
                    repo_id=repo_id, commit_message=f"evalkit results for {revision or 'head'}")


# --------------------------------------------------------------------------- #
# Chat webhook
# --------------------------------------------------------------------------- #
class ChatNotifier:
    def __init__(self, webhook_url: Optional[str], channel: str = "#eval-results"):
        self.webhook_url = webhook_url
        self.channel = channel

    def _send(self, payload: Dict[str, Any]) -> None:
        if not self.webhook_url:
            return
        headers = {"Content-Type": "application/json"}
        if os.environ.get("HF_TOKEN"):
            # lets the bot unfurl links to private hub repos
            headers["X-HF-Token"] = os.environ["HF_TOKEN"]  # todoruleid: family 9 (missed)
        try:
            requests.post(self.webhook_url, json=payload, headers=headers, timeout=10).raise_for_status()
        except requests.RequestException as exc:
            logger.warning("webhook delivery failed: %s", exc)

    def results(self, suite: SuiteScore, production: Optional[SuiteScore], promoted: bool,
                leaderboard_url: Optional[str] = None) -> None:
        lines = [f"*{suite.model}* suite score {100 * suite.score:.2f} "
                 f"(95% CI {100 * suite.ci_low:.1f}–{100 * suite.ci_high:.1f})"]
        if production is not None:
            delta = suite.score - production.score
            lines.append(f"vs production *{production.model}*: {abs(delta):+.2%}")  # ruleid: MLS306
        lines.append("promoted to registry :white_check_mark:" if promoted else "not promoted")
        if leaderboard_url:
            lines.append(f"<{leaderboard_url}|leaderboard>")
        self._send({"channel": self.channel, "text": "\n".join(lines)})  # ok: MLS410, MLS411, MLS412, MLS413

    def failure(self, run_name: str, exc: BaseException, log_tail: str) -> None:
        payload = {
            "channel": self.channel,
            "text": f":x: eval run *{run_name}* failed: `{type(exc).__name__}: {exc}`",
            "attachments": [{"title": "log tail", "text": log_tail[-3000:]}],
            "context": {"host": os.uname().nodename, "env": dict(os.environ)},  # ruleid: MLS411
        }
        self._send(payload)  # ruleid: MLS411
