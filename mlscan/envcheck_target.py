"""Which environment `mlscan env` checks: site directories and the interpreter's base sys.path.

For `--python PATH` (and the default, the running interpreter) we run that interpreter with
`-I -S` and a fixed snippet that only prints paths: `-S` keeps `site` from processing `.pth`
files and importing sitecustomize, `-I` ignores PYTHON* variables and the user site. Nothing
from the scanned environment is imported into our process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlscan.envcheck_hash import read_regular

_PROBE = r"""
import json, os, site, sys, sysconfig
p = sysconfig.get_paths()
# What site.venv() would do (it is skipped under -S): find pyvenv.cfg beside the executable.
exe_dir = os.path.dirname(os.path.abspath(sys.executable))
venv = os.path.dirname(exe_dir)
cfg = [c for c in (os.path.join(exe_dir, "pyvenv.cfg"), os.path.join(venv, "pyvenv.cfg"))
       if os.path.isfile(c)]
print(json.dumps({
    "venv_cfg": cfg[0] if cfg else None,
    "venv_site": site.getsitepackages([venv]) if cfg else [],
    "prefix": sys.prefix, "base_prefix": sys.base_prefix,
    "exec_prefix": sys.exec_prefix, "base_exec_prefix": sys.base_exec_prefix,
    "sys_path": sys.path, "purelib": p.get("purelib"), "platlib": p.get("platlib"),
    "site": site.getsitepackages(),
    "base_site": site.getsitepackages([sys.base_prefix, sys.base_exec_prefix]),
    "user_site": site.getusersitepackages(),
    "version": "%d.%d.%d" % sys.version_info[:3],
    "cache_tag": sys.implementation.cache_tag,
}))
"""


class TargetError(Exception):
    """The target environment cannot be determined (bad --python or --path)."""


@dataclass(frozen=True)
class TargetEnv:
    site_dirs: tuple[Path, ...]
    """Directories `site` processes (.pth files) and where distributions are installed."""
    base_path: tuple[Path, ...] = ()
    """sys.path before `site` runs (stdlib, lib-dynload): searched for sitecustomize."""
    user_site_enabled: bool = False
    executable: str | None = None
    version: str = ""
    cache_tag: str | None = None
    """Byte-code cache tag of the target interpreter (None for --path)."""

    @property
    def display_base(self) -> Path:
        return self.site_dirs[0]

    def display(self, path: Path | str) -> str:
        """Paths under the first site directory are shown relative to it, others absolute."""
        text = os.path.normpath(os.fspath(path))
        base = os.fspath(self.display_base)
        if text.startswith(base + os.sep):
            return text[len(base) + 1:].replace(os.sep, "/")
        return text


def _pyvenv_cfg(prefix: str) -> dict[str, str]:
    cfg = Path(prefix) / "pyvenv.cfg"
    out: dict[str, str] = {}
    try:
        text = read_regular(cfg, 1 << 16).decode("utf-8", "replace")
    except OSError:
        return out
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip().lower()] = value.strip()
    return out


def _dedupe(paths: list[str]) -> tuple[Path, ...]:
    seen: set[str] = set()
    out: list[Path] = []
    for p in paths:
        norm = os.path.normpath(os.path.abspath(p))
        if norm not in seen:
            seen.add(norm)
            out.append(Path(norm))
    return tuple(out)


def from_probe(data: dict[str, object], executable: str | None) -> TargetEnv:
    """Build the target from the probe's output, mirroring what `site.main()` would add."""

    def strs(key: str) -> list[str]:
        value = data.get(key)
        if isinstance(value, str):
            return [value]
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []

    prefix = str(data.get("prefix", ""))
    venv_cfg = data.get("venv_cfg")
    cfg: dict[str, str] = {}
    if isinstance(venv_cfg, str):
        cfg = _pyvenv_cfg(os.path.dirname(venv_cfg))
        sites = strs("venv_site")
    elif prefix != str(data.get("base_prefix", prefix)):  # interpreters that set it without site
        cfg = _pyvenv_cfg(prefix)
        sites = strs("site")
    else:
        sites = []
    in_venv = bool(sites)
    system_site = not in_venv or cfg.get("include-system-site-packages", "false").lower() == "true"
    user_site_enabled = system_site and not os.environ.get("PYTHONNOUSERSITE")
    if system_site:
        sites += strs("site") + strs("purelib") + strs("platlib") + strs("base_site")
    user = strs("user_site")
    if user_site_enabled and user and os.path.isdir(user[0]):
        sites += user
    existing = [s for s in sites if os.path.isdir(s)]
    if not existing:
        raise TargetError(f"{executable or 'interpreter'}: no site-packages directory found")
    return TargetEnv(site_dirs=_dedupe(existing), base_path=_dedupe(strs("sys_path")),
                     user_site_enabled=bool(user_site_enabled), executable=executable,
                     version=str(data.get("version", "")),
                     cache_tag=str(data["cache_tag"]) if data.get("cache_tag") else None)


def probe_python(executable: str, timeout: float = 30.0) -> TargetEnv:
    """Ask `executable` (run isolated, without site) for its paths."""
    try:
        proc = subprocess.run([executable, "-I", "-S", "-c", _PROBE], capture_output=True,
                              text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise TargetError(f"{executable}: cannot run: {exc}") from None
    if proc.returncode != 0:
        tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise TargetError(f"{executable}: probe failed (exit {proc.returncode}): {tail[0]}")
    try:
        data = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise TargetError(f"{executable}: unexpected probe output") from None
    if not isinstance(data, dict):
        raise TargetError(f"{executable}: unexpected probe output")
    return from_probe(data, executable)


def from_site_dir(path: Path) -> TargetEnv:
    if not path.is_dir():
        raise TargetError(f"{path}: not a directory")
    return TargetEnv(site_dirs=_dedupe([os.fspath(path)]))


def resolve(python: str | None, site_dir: Path | None) -> TargetEnv:
    """--path wins, then --python, then the running interpreter."""
    if site_dir is not None:
        return from_site_dir(site_dir)
    if python is not None and os.path.isdir(python):  # a venv or prefix folder
        found = [c for c in (os.path.join(python, "bin", "python"),
                             os.path.join(python, "Scripts", "python.exe")) if os.path.isfile(c)]
        if not found:
            raise TargetError(f"{python}: folder without bin/python")
        python = found[0]
    return probe_python(python or sys.executable)
