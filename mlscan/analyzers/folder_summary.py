"""Per-model-folder summary: formats found, what loading each would execute, safest loader.

Pure data for reporters: `summarize_folder(path, findings, display)` returns text lines and
never prints. It sniffs file heads only (no analysis); verdicts come from the findings the
scan already produced for files in the folder.
"""

from __future__ import annotations

import os
import posixpath
import zipfile
from collections.abc import Iterable
from pathlib import Path

from mlscan.discover import SKIP_DIRS, display_path
from mlscan.kinds import HEAD_SIZE, Kind, sniff
from mlscan.model import Finding

MAX_FILES = 20_000
PICKLE_RULES = frozenset({"MLS201", "MLS202", "MLS203", "MLS204", "MLS205", "MLS206", "MLS207"})
_EXECUTES = {
    "safetensors": "nothing (tensor data only)",
    "gguf": "nothing itself; its chat template is rendered by the serving engine",
    "onnx": "standard operators; custom-domain ops load native libraries",
    "pickle": "any callable the pickle names (torch.load / pickle.load / joblib.load)",
    "keras": "Lambda bytecode and referenced modules unless safe_mode=True",
    "hdf5": "Lambda layers in model_config (legacy H5 loading ignores safe_mode)",
    "tensorflow": "graph ops when the model is called (file and Python ops flagged)",
    "remote-code": "repository Python files under trust_remote_code=True",
    "chat-template": "Jinja template code when a chat request is formatted",
    "yaml-target": "_target_ callables when the config is instantiated (Hydra/NeMo)",
    "python": "arbitrary code when imported or run",
}


def _classify(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEAD_SIZE)
    except OSError:
        return None
    kind = sniff(head, path.name)
    if kind is Kind.ZIP:
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()[:10_000]
        except (zipfile.BadZipFile, OSError, ValueError):
            return "pickle"  # a zip loaders accept but zipfile refuses: treat as the worst
        if "config.json" in names and any(n.endswith(".h5") for n in names):
            return "keras"
        return "pickle" if any(n.endswith(".pkl") for n in names) else None
    if kind in (Kind.PICKLE, Kind.ZLIB, Kind.GZIP, Kind.BZIP2, Kind.XZ, Kind.LZMA, Kind.SEVENZ):
        return "pickle"
    simple = {Kind.SAFETENSORS: "safetensors", Kind.GGUF: "gguf", Kind.ONNX: "onnx",
              Kind.HDF5: "hdf5", Kind.TF_SAVEDMODEL: "tensorflow", Kind.JINJA: "chat-template",
              Kind.PYTHON: "python"}
    if kind in simple:
        return simple[kind]
    if kind is Kind.JSON and path.stat().st_size < 32 << 20:
        text = path.read_bytes()
        if b'"auto_map"' in text or b'"custom_pipelines"' in text:
            return "remote-code"
        if b'"chat_template"' in text:
            return "chat-template"
    if kind is Kind.YAML and path.stat().st_size < 32 << 20 and b"_target_" in path.read_bytes():
        return "yaml-target"
    return None


def formats_in(folder: Path, recursive: bool = True) -> dict[str, list[str]]:
    """Format label -> relative file names, for every recognized file under `folder`."""
    found: dict[str, list[str]] = {}
    count = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS) if recursive else []
        for name in sorted(filenames):
            count += 1
            if count > MAX_FILES:
                found.setdefault("unscanned", []).append(f"more than {MAX_FILES} files")
                return found
            path = Path(dirpath) / name
            if path.is_symlink():
                continue
            label = _classify(path)
            if label is not None:
                found.setdefault(label, []).append(path.relative_to(folder).as_posix())
    return found


MODEL_LABELS = frozenset({"safetensors", "gguf", "onnx", "pickle", "keras", "hdf5",
                          "tensorflow", "remote-code"})


def summarize_scan(roots: Iterable[Path], findings: Iterable[Finding],
                   base: Path | None = None, max_folders: int = 50) -> list[str]:
    """Summaries of every folder under `roots` that directly holds a model artifact or a
    remote-code config. Display paths are relative to `base` (default: the working
    directory), matching the findings' paths."""
    base = (base or Path.cwd()).absolute()
    all_findings = list(findings)
    lines: list[str] = []
    folders = 0
    for given in roots:
        given = given.absolute()
        root = given if given.is_dir() else given.parent
        # the same rule as discovery: relative to base when under it, else to the root
        rel_to = base if (given == base or base in given.parents) else root
        for dirpath, dirnames, _ in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            folder = Path(dirpath)
            found = formats_in(folder, recursive=False)
            if not MODEL_LABELS & set(found):
                continue
            folders += 1
            if folders > max_folders:
                return [*lines, f"(summaries stop after {max_folders} model folders)"]
            display = display_path(folder, rel_to)
            if folder == rel_to:
                display = "."
            here = "" if display == "." else display
            direct = [f for f in all_findings if posixpath.dirname(f.path) == here]
            block = summarize_folder(folder, direct, display, found)
            if display == ".":  # name the folder as the user knows it, not "."
                block[0] = f"model folder {folder.as_posix() if rel_to != base else '.'}:"
            lines.extend(block)
    return lines


def summarize_folder(path: Path, findings: Iterable[Finding] = (),
                     display: str | None = None,
                     found: dict[str, list[str]] | None = None) -> list[str]:
    """Text lines for one model folder. `findings` are the scan's findings; only those whose
    path lies under `display` (the folder's display path) are used (all when None).
    `found` skips the walk when the caller already has `formats_in(path)`."""
    found = formats_in(path) if found is None else found
    mine = [f for f in findings if display is None or display in (".", "")
            or f.path == display or f.path.startswith(display.rstrip("/") + "/")]
    serious = [f for f in mine if f.severity.rank >= 3]
    lines = [f"model folder {display or path.name}:"]
    if not found:
        return [*lines, "  no model artifacts or configs recognized"]
    for label, names in sorted(found.items()):
        shown = ", ".join(names[:4]) + (f", +{len(names) - 4} more" if len(names) > 4 else "")
        lines.append(f"  {label}: {shown}")
        if label in _EXECUTES:
            lines.append(f"    on load runs: {_EXECUTES[label]}")
    lines.append(f"  verdict: {_verdict(found, mine, serious)}")
    return lines


def _verdict(found: dict[str, list[str]], mine: list[Finding], serious: list[Finding]) -> str:
    if serious:
        rules = sorted({f.rule_id for f in serious})
        return (f"NOT SAFE to load: {len(serious)} high/critical finding(s) "
                f"({', '.join(rules[:6])})")
    advice: list[str] = []
    pickle_notes = {f.rule_id for f in mine if f.rule_id in PICKLE_RULES}
    if "safetensors" in found:
        advice.append("load the safetensors weights (from_pretrained(use_safetensors=True) / "
                      "safetensors.torch.load_file)")
    if "pickle" in found:
        if not pickle_notes:
            advice.append("pickle files use only allowlisted globals: safe with "
                          "torch.load(weights_only=True)")
        else:
            advice.append("pickle files reference non-allowlisted classes: they need "
                          "weights_only=False; prefer safetensors")
    if "remote-code" in found:
        advice.append("needs trust_remote_code=True: review the listed .py files and pin "
                      "revision=")
    if "keras" in found or "hdf5" in found:
        advice.append("keras.saving.load_model(path, safe_mode=True)")
    if "onnx" in found:
        advice.append("onnxruntime.InferenceSession without custom-op libraries")
    if "gguf" in found or "chat-template" in found:
        advice.append("render chat templates with a sandboxed Jinja environment")
    if "yaml-target" in found:
        advice.append("_target_ values point at known libraries; review any listed above")
    only_data = set(found) <= {"safetensors", "gguf", "onnx", "chat-template"}
    head = "safe: data-only formats" if only_data else "no high/critical findings"
    return head + ("; " + "; ".join(advice) if advice else "")
