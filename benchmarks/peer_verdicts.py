"""Per-file verdicts of one peer scanner, run inside the peers' venv (never mlscan's).

    PEER_PYTHON benchmarks/peer_verdicts.py TOOL < files.json > verdicts.json

TOOL is picklescan, fickling, modelscan or modelaudit. Each file gets "flagged" (the tool's
own CLI would report it unsafe / exit 1), "clean", or "error: ..." (crash or 60 s timeout).
Every verdict comes from the tool's static API: nothing here loads a model.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Callable
from typing import Any

TIMEOUT = 60


def _picklescan(path: str) -> bool:
    from picklescan.scanner import SafetyLevel, scan_file_path

    r = scan_file_path(path)
    return bool(r.issues_count > 0 or any(g.safety == SafetyLevel.Dangerous for g in r.globals))


def _fickling(path: str) -> bool:
    """fickling's zip-aware scanner (what its Hugging Face scan uses), else the raw one."""
    import zipfile

    from fickling.loader import scan_file, scan_zip_archive

    if zipfile.is_zipfile(path):  # fickling.polyglot's own check needs torch installed
        results = list(scan_zip_archive(path, graceful=True, json_output_path=_devnull()).values())
    else:
        results = [scan_file(path, graceful=True, json_output_path=_devnull())]
    if any(not r.is_safe for r in results):
        return True
    errors = [e for r in results for e in r.errors]
    if errors:
        raise RuntimeError(str(errors[0])[:120])
    return False


def _devnull() -> str:
    import os

    return os.devnull


def _modelscan(path: str) -> bool:
    from modelscan.modelscan import ModelScan

    result: dict[str, Any] = ModelScan().scan(path)
    return bool(result.get("issues"))


def _modelaudit(path: str) -> bool:
    from modelaudit.core import scan_model_directory_or_file
    from modelaudit.core_results import determine_exit_code

    return determine_exit_code(scan_model_directory_or_file(path)) == 1


TOOLS: dict[str, Callable[[str], bool]] = {
    "picklescan": _picklescan, "fickling": _fickling, "modelscan": _modelscan,
    "modelaudit": _modelaudit,
}


def _alarm(signum: int, frame: object) -> None:
    raise TimeoutError(f"no verdict within {TIMEOUT} s")


def main() -> int:
    tool = TOOLS[sys.argv[1]]
    logging.disable(logging.CRITICAL)
    files: list[str] = json.load(sys.stdin)
    signal.signal(signal.SIGALRM, _alarm)
    out: dict[str, str] = {}
    for path in files:
        signal.alarm(TIMEOUT)
        try:
            out[path] = "flagged" if tool(path) else "clean"
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a peer crash is data
            out[path] = f"error: {type(exc).__name__}: {str(exc)[:120]}"
        finally:
            signal.alarm(0)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
