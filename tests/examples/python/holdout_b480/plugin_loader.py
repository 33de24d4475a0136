# ruff: noqa
# Hold-out batch 480 (family-focused 7/10, serving and fine-tuning toolkit). Measured once in session 20 (round 129): 20/30 (67%) at medium+; one benign look-alike flagged.
"""Plugin discovery and loading for the tabnlp serving toolkit.

A plugin is a directory under one of the plugin search paths containing ``plugin.yaml``::

        name: churn-features
        version: 0.3.1
        module: churn_features          # importable module inside the directory
        hooks: [preprocess, postprocess]
        artifacts:
          encoder: encoder.dill         # optional pre-fitted objects
        requirements: [category_encoders>=2.6]
"""
from __future__ import annotations

import importlib
import logging
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional

import yaml

logger = logging.getLogger("tabnlp.plugins")

DEFAULT_SEARCH_PATHS = [
    Path(os.environ.get("TABNLP_PLUGIN_DIR", os.path.expanduser("~/.local/share/tabnlp/plugins"))),
    Path(os.environ.get("TABNLP_SHARED", "/mnt/shared/tabnlp")) / "plugins",
]
KNOWN_HOOKS = ("preprocess", "postprocess", "on_batch_end", "on_load", "metrics")


@dataclass
class PluginManifest:
    name: str
    version: str
    root: Path
    module: str
    hooks: List[str] = field(default_factory=list)
    artifacts: Dict[str, str] = field(default_factory=dict)
    requirements: List[str] = field(default_factory=list)

    @classmethod
    def from_dir(cls, root: Path) -> "PluginManifest":
        with open(root / "plugin.yaml") as fh:
            raw = yaml.safe_load(fh) or {}  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106
        missing = [k for k in ("name", "version", "module") if k not in raw]
        if missing:
            raise ValueError(f"{root}/plugin.yaml missing keys: {missing}")
        hooks = [h for h in raw.get("hooks", []) if h in KNOWN_HOOKS]
        unknown = set(raw.get("hooks", [])) - set(hooks)
        if unknown:
            logger.warning("plugin %s declares unknown hooks %s", raw["name"], sorted(unknown))
        return cls(
            name=str(raw["name"]), version=str(raw["version"]), root=root, module=str(raw["module"]),
            hooks=hooks, artifacts=dict(raw.get("artifacts", {})),
            requirements=list(raw.get("requirements", [])),
        )


class PluginRegistry:
    def __init__(self) -> None:
        self._hooks: Dict[str, List[Callable[..., Any]]] = defaultdict(list)
        self.plugins: Dict[str, PluginManifest] = {}
        self.artifacts: Dict[str, Dict[str, Any]] = {}

    def register(self, hook: str, fn: Callable[..., Any], priority: int = 100) -> None:
        if hook not in KNOWN_HOOKS:
            raise ValueError(f"unknown hook {hook!r}")
        fn._tabnlp_priority = priority  # type: ignore[attr-defined]
        self._hooks[hook].append(fn)
        self._hooks[hook].sort(key=lambda f: getattr(f, "_tabnlp_priority", 100))

    def call(self, hook: str, value: Any, **ctx: Any) -> Any:
        for fn in self._hooks.get(hook, []):
            try:
                out = fn(value, **ctx)
            except Exception:
                logger.exception("hook %s from %s failed", hook, getattr(fn, "__module__", "?"))
                raise
            if out is not None:
                value = out
        return value


def discover_dirs(search_paths: Iterable[Path] = DEFAULT_SEARCH_PATHS) -> List[PluginManifest]:
    found: List[PluginManifest] = []
    for base in search_paths:
        if not base.is_dir():
            continue
        for child in sorted(base.iterdir()):
            if (child / "plugin.yaml").is_file():
                try:
                    found.append(PluginManifest.from_dir(child))
                except Exception as exc:
                    logger.warning("skipping plugin at %s: %s", child, exc)
    return found


def install_requirements(manifest: PluginManifest) -> None:
    if manifest.requirements:
        logger.info("plugin %s: installing %s", manifest.name, manifest.requirements)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *manifest.requirements], check=True)


def install_plugin(manifest: PluginManifest) -> Path:
    """Vendor a directory plugin so it is importable without the search path."""
    purelib = Path(sysconfig.get_paths()["purelib"])
    src = manifest.root / manifest.module
    if not src.exists():
        src = manifest.root
    dest = purelib / manifest.module
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))  # sabotage: MLS420 (semgrep rules)
    logger.info("installed plugin %s %s -> %s", manifest.name, manifest.version, dest)
    return dest


def persist_search_path(paths: Iterable[Path]) -> None:
    """Make plugin dirs importable in login shells (cron jobs, notebooks)."""
    rc = Path(os.path.expanduser("~/.bashrc"))
    joined = ":".join(str(p) for p in paths)
    line = f'export PYTHONPATH="{joined}:${{PYTHONPATH}}"\n'
    existing = rc.read_text() if rc.exists() else ""
    if line not in existing:
        with open(rc, "a") as fh:
            fh.write("\n# tabnlp plugins\n")
            fh.write(line)  # todoruleid: family 7 (missed)


def enable_autoload() -> Path:
    """Register plugins automatically in every interpreter started by this user."""
    user_site = Path(site.getusersitepackages())
    user_site.mkdir(parents=True, exist_ok=True)
    target = user_site / "usercustomize.py"
    code = (
        "try:\n"
        "    from plugin_loader import load_all as _tabnlp_load_all\n"
        "    _tabnlp_load_all()\n"
        "except Exception:\n"
        "    pass\n"
    )
    target.write_text(code)  # sabotage: MLS420, MLS421 (semgrep rules)
    return target


def _load_artifacts(manifest: PluginManifest) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if not manifest.artifacts:
        return out
    import dill

    for key, rel in manifest.artifacts.items():
        path = manifest.root / rel
        if not path.is_file():
            logger.warning("plugin %s: artifact %s missing (%s)", manifest.name, key, path)
            continue
        with open(path, "rb") as fh:
            out[key] = dill.load(fh)  # ruleid: MLS103
    return out


def _import_dir_plugin(manifest: PluginManifest) -> Any:
    root = str(manifest.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        return importlib.import_module(manifest.module)
    finally:
        if sys.path and sys.path[0] == root:
            sys.path.pop(0)


def load_dir_plugin(registry: PluginRegistry, manifest: PluginManifest, install_deps: bool = True) -> None:
    if install_deps:
        install_requirements(manifest)
    mod = _import_dir_plugin(manifest)
    artifacts = _load_artifacts(manifest)
    setup = getattr(mod, "setup", None)
    if callable(setup):
        setup(registry, artifacts=artifacts)
    else:
        for hook in manifest.hooks:
            fn = getattr(mod, hook, None)
            if callable(fn):
                registry.register(hook, fn)
    registry.plugins[manifest.name] = manifest
    registry.artifacts[manifest.name] = artifacts
    logger.info("loaded plugin %s %s (%s)", manifest.name, manifest.version, ", ".join(manifest.hooks))


_GLOBAL: Optional[PluginRegistry] = None


def load_all(search_paths: Iterable[Path] = DEFAULT_SEARCH_PATHS, install_deps: bool = False,
             only: Optional[List[str]] = None) -> PluginRegistry:
    global _GLOBAL
    if _GLOBAL is not None and only is None:
        return _GLOBAL
    reg = PluginRegistry()
    for manifest in discover_dirs(search_paths):
        if only and manifest.name not in only:
            continue
        try:
            load_dir_plugin(reg, manifest, install_deps=install_deps)
        except Exception:
            logger.exception("plugin %s failed to load", manifest.name)
    if only is None:
        _GLOBAL = reg
    return reg


def open_debug_shell(manifest: PluginManifest) -> int:
    """Drop into an interactive interpreter with the plugin pre-imported."""
    env = dict(os.environ)
    startup = manifest.root / ".debugrc.py"
    if not startup.exists():
        startup.write_text(f"import sys\nsys.path.insert(0, {str(manifest.root)!r})\nimport {manifest.module}\n")
    env["PYTHONSTARTUP"] = str(startup)  # sabotage: MLS422 (semgrep rules)
    return subprocess.call([sys.executable, "-i"], env=env, cwd=str(manifest.root))
