"""Everything that runs code at interpreter start-up: .pth import lines, sitecustomize /
usercustomize, and environment variables that change what Python or the loader loads.

Files are read as text, never imported or executed.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from mlscan.envcheck_hash import read_regular
from mlscan.model import Severity

_MAX_PTH = 1 << 20

# Known benign `.pth` import lines, matched on the whole (stripped) line.
_BENIGN_LINES = (
    # setuptools >= 49: makes setuptools' distutils win over the stdlib one.
    re.compile(r"import os; ?var = 'SETUPTOOLS_USE_DISTUTILS'; ?enabled = "
               r"os\.environ\.get\(var, '(?:local|stdlib)'\) == 'local'; ?"
               r"enabled and __import__\('_distutils_hack'\)\.add_shim\(\); ?"),
    # setuptools editable installs (PEP 660): import the generated finder and install it.
    re.compile(r"import (__editable___[A-Za-z0-9_.]+_finder); ?\1\.install\(\)"),
    # virtualenv's own hook.
    re.compile(r"import _virtualenv"),
)
# setuptools `-nspkg.pth` namespace-package shims (benign only when RECORD-verified).
_NSPKG = re.compile(r"import sys, types, os;")
_NSPKG_FORBIDDEN = re.compile(r"exec|eval|compile|open\(|system|subprocess|socket|urllib|"
                              r"base64|marshal|codecs|getattr|__builtins__|lambda")

# Ubuntu/Debian ship this sitecustomize.py for the apport crash handler.
_APPORT_SITECUSTOMIZE = (
    "# install the apport exception handler if available\ntry:\n    import apport_python_hook\n"
    "except ImportError:\n    pass\nelse:\n    apport_python_hook.install()"
)

# Variable -> (severity, why). Values are reported, never interpreted.
STARTUP_VARS: Mapping[str, tuple[Severity, str]] = {
    "LD_PRELOAD": (Severity.HIGH, "the dynamic loader loads these libraries into every process"),
    "LD_AUDIT": (Severity.HIGH, "the dynamic loader loads these auditing libraries"),
    "DYLD_INSERT_LIBRARIES": (Severity.HIGH, "macOS loads these libraries into every process"),
    "CUDA_INJECTION64_PATH": (Severity.HIGH, "CUDA loads this injection library into every "
                              "CUDA process"),
    "GCONV_PATH": (Severity.HIGH, "glibc loads charset conversion modules from here"),
    "PYTHONPATH": (Severity.MEDIUM, "prepended to sys.path; can shadow installed packages"),
    "PYTHONHOME": (Severity.MEDIUM, "replaces the standard library location"),
    "PYTHONSTARTUP": (Severity.MEDIUM, "this file runs at every interactive start-up"),
    "PYTHONUSERBASE": (Severity.MEDIUM, "moves the user site directory (its .pth files and "
                       "usercustomize run at start-up)"),
    "PYTHONPLATLIBDIR": (Severity.MEDIUM, "changes where the standard library is looked up"),
    "PYTHONBREAKPOINT": (Severity.MEDIUM, "breakpoint() calls this callable"),
    "LD_LIBRARY_PATH": (Severity.MEDIUM, "searched before system library paths (CUDA, NCCL, "
                        "BLAS can be substituted)"),
    "DYLD_LIBRARY_PATH": (Severity.MEDIUM, "searched before system library paths"),
    "NCCL_NET_PLUGIN": (Severity.MEDIUM, "NCCL loads this network plugin library"),
    "NCCL_TUNER_PLUGIN": (Severity.MEDIUM, "NCCL loads this tuner plugin library"),
    "NCCL_PROFILER_PLUGIN": (Severity.MEDIUM, "NCCL loads this profiler plugin library"),
    "PYTHONINSPECT": (Severity.LOW, "drops into an interactive prompt after the script"),
    "PYTHONEXECUTABLE": (Severity.LOW, "changes sys.executable (child processes)"),
    "TORCH_EXTENSIONS_DIR": (Severity.LOW, "torch loads JIT-compiled extensions from here"),
}


@dataclass(frozen=True)
class PthLine:
    number: int
    text: str


@dataclass(frozen=True)
class PthFile:
    path: Path
    exec_lines: tuple[PthLine, ...]
    path_entries: tuple[str, ...]
    """Absolute directories the file adds to sys.path (only those that exist)."""
    benign: bool
    nspkg: bool
    problem: str | None = None


def _line_benign(text: str) -> bool:
    return any(p.fullmatch(text) for p in _BENIGN_LINES)


def _nspkg_like(name: str, text: str) -> bool:
    return (name.endswith("-nspkg.pth") and bool(_NSPKG.match(text))
            and not _NSPKG_FORBIDDEN.search(text))


def read_pth(path: Path) -> PthFile:
    """Classify a .pth file's lines exactly as `site.addpackage` would treat them."""
    try:
        data = read_regular(path, _MAX_PTH)
    except OSError as exc:
        return PthFile(path, (), (), False, False, problem=exc.strerror or str(exc))
    text = data.decode("utf-8", "replace").removeprefix("\ufeff")
    execs: list[PthLine] = []
    entries: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if raw.startswith("#") or not raw.strip():
            continue
        if raw.startswith(("import ", "import\t")):
            execs.append(PthLine(number, raw.strip()))
            continue
        target = os.path.normpath(os.path.join(path.parent, raw.rstrip()))
        if os.path.exists(target):
            entries.append(target)
    benign = all(_line_benign(line.text) for line in execs)
    nspkg = bool(execs) and all(_nspkg_like(path.name, line.text) for line in execs)
    return PthFile(path, tuple(execs), tuple(entries), benign, nspkg)


def pth_files(site_dirs: Iterable[Path]) -> list[Path]:
    """Every .pth in the site directories, in the order site processes them."""
    out: list[Path] = []
    for site_dir in site_dirs:
        try:
            names = sorted(os.listdir(site_dir))
        except OSError:
            continue
        out.extend(site_dir / n for n in names if n.endswith(".pth"))
    return out


@dataclass(frozen=True)
class StartupModule:
    path: Path
    module: str
    """'sitecustomize' or 'usercustomize'."""
    member: str | None = None
    """Entry inside a zip on sys.path."""
    benign: bool = False


def _candidates(names: Iterable[str], module: str) -> Iterable[str]:
    for name in names:
        if name == module or (name.startswith(module + ".")
                              and name.endswith((".py", ".pyc", ".so", ".pyd", ".pyw"))):
            yield name


def _is_apport(path: Path) -> bool:
    try:
        text = read_regular(path, 4096).decode("utf-8", "replace")
    except OSError:
        return False
    return text.strip() == _APPORT_SITECUSTOMIZE


def find_startup_modules(search_path: Iterable[Path]) -> list[StartupModule]:
    """sitecustomize/usercustomize importable from any directory (or zip) on the path."""
    found: list[StartupModule] = []
    for entry in search_path:
        if os.path.isdir(entry):
            try:
                names = os.listdir(entry)
            except OSError:
                continue
            for module in ("sitecustomize", "usercustomize"):
                for name in sorted(_candidates(names, module)):
                    path = entry / name
                    if name == module and not (path / "__init__.py").exists():
                        continue  # a folder without __init__ imports as an empty namespace package
                    found.append(StartupModule(path, module, benign=(
                        module == "sitecustomize" and name.endswith(".py") and _is_apport(path))))
        elif os.path.isfile(entry) and zipfile.is_zipfile(entry):
            try:
                with zipfile.ZipFile(entry) as zf:
                    members = zf.namelist()
            except (OSError, zipfile.BadZipFile):
                continue
            for module in ("sitecustomize", "usercustomize"):
                tops = {m.split("/", 1)[0] for m in members}
                for name in sorted(_candidates(tops, module)):
                    found.append(StartupModule(entry, module, member=name))
    return found


def startup_env(environ: Mapping[str, str]) -> list[tuple[str, str, Severity, str]]:
    """(name, value, severity, why) for every set start-up variable."""
    out = []
    for name, (severity, why) in STARTUP_VARS.items():
        value = environ.get(name, "")
        if value.strip():
            out.append((name, value, severity, why))
    return out
