"""Hugging Face repository configs: remote code (auto_map, custom pipelines, diffusers
components), shard indexes escaping the folder, and dataset loading scripts."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlscan.analyzers.base import Source, Target, register_batch
from mlscan.context import Budget
from mlscan.kinds import Kind
from mlscan.model import Finding
from mlscan.rulesets.hf_formats import (
    HF_DATASET_SCRIPT,
    HF_INDEX_TRAVERSAL,
    HF_REMOTE_CODE,
    HF_REMOTE_CODE_CROSS_REPO,
    HF_REMOTE_CODE_MISSING,
    REMOTE_CODE_DANGEROUS_CALL,
)

# diffusers component libraries that are importable packages, not repository code.
KNOWN_LIBRARIES = frozenset({"diffusers", "transformers", "onnxruntime", "optimum",
                             "peft", "torch", "sentence_transformers", "open_clip", "timm"})
_BUILDER = re.compile(  # a class statement at the start of a line, not text in a string
    rb"(?m)^class\s+\w+\s*\(\s*(?:datasets\.)?"
    rb"(GeneratorBasedBuilder|ArrowBasedBuilder|BeamBasedBuilder|DatasetBuilder)\b")


def references(obj: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, 'module.Class' or 'owner/repo--module.Class') for every remote-code reference."""
    auto_map = obj.get("auto_map")
    if isinstance(auto_map, dict):
        for key, value in auto_map.items():
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, str) and v:
                    yield f"auto_map.{key}", v
    pipelines = obj.get("custom_pipelines")
    if isinstance(pipelines, dict):
        for task, spec in pipelines.items():
            if isinstance(spec, dict) and isinstance(spec.get("impl"), str):
                yield f"custom_pipelines.{task}", spec["impl"]


def check_hf_config(obj: dict[str, Any], src: Source) -> Iterator[Finding]:
    folder = src.fs_path.parent if src.fs_path is not None else None
    by_module: dict[str, list[str]] = {}
    for where, ref in references(obj):
        if "--" in ref:
            repo, _, local = ref.partition("--")
            yield HF_REMOTE_CODE_CROSS_REPO.finding(
                src.path, f"{where} loads {local!r} from another repository {repo!r}: that code "
                "is downloaded and run at load time and was not scanned", evidence=ref,
                member=src.member)
            continue
        module = ref.rsplit(".", 1)[0] if "." in ref else ref
        by_module.setdefault(module, []).append(f"{where}={ref}")
    for module, uses in sorted(by_module.items()):
        dotted = re.fullmatch(r"[A-Za-z_][\w.]*", module) is not None
        rel = (module.replace(".", "/") if dotted else module) + ".py"
        problem = _resolve(folder, rel) if folder is not None else None
        if problem is not None:
            yield HF_REMOTE_CODE_MISSING.finding(
                src.path, f"{', '.join(uses)}: {rel} {problem}; transformers would fetch and "
                "run code that was not scanned", evidence=rel, member=src.member)
        else:
            yield HF_REMOTE_CODE.finding(
                src.path, f"loading with trust_remote_code=True runs {rel} "
                f"({', '.join(uses[:4])}{', ...' if len(uses) > 4 else ''})", evidence=rel,
                member=src.member)
            if folder is not None and src.member is None:
                yield from _remote_code_calls(folder, rel, src.path)
    yield from _diffusers(obj, src)
    yield from _peft(obj, src)
    yield from _index(obj, src)


def _remote_code_calls(folder: Path, rel: str, config_path: str) -> Iterator[Finding]:
    from mlscan.analyzers.remote_code import dangerous_calls

    shown = posixpath.join(posixpath.dirname(config_path), rel)
    for line, name in dangerous_calls(folder / rel):
        yield REMOTE_CODE_DANGEROUS_CALL.finding(
            shown, f"{name}() in remote code: runs inside from_pretrained(..., "
            f"trust_remote_code=True) as configured by {config_path}", line=line, evidence=name)


def _peft(obj: dict[str, Any], src: Source) -> Iterator[Finding]:
    """PEFT adapter_config.json `auto_mapping` makes AutoPeftModel import `parent_library`
    and fetch `base_model_class` from it."""
    mapping = obj.get("auto_mapping")
    if not isinstance(mapping, dict):
        return
    library, cls = mapping.get("parent_library"), mapping.get("base_model_class")
    if isinstance(library, str) and library.split(".")[0] not in KNOWN_LIBRARIES:
        yield HF_REMOTE_CODE.finding(
            src.path, f"auto_mapping makes AutoPeftModel import {library!r} and use {cls!r}",
            evidence=f"{library}.{cls}", member=src.member)


def _resolve(folder: Path, rel: str) -> str | None:
    """None when `rel` is a regular file inside `folder`; else what is wrong with it."""
    if escapes(rel):
        return "points outside the repository"
    path = folder / rel
    try:
        if not path.is_file():
            return "is missing"
        real, base = path.resolve(), folder.resolve()
    except OSError:
        return "cannot be read"
    if base not in real.parents:
        return f"is a link out of the repository (to {real})"
    return None


def _diffusers(obj: dict[str, Any], src: Source) -> Iterator[Finding]:
    if "_diffusers_version" not in obj:
        return
    for component, spec in obj.items():
        if (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], str)
                and spec[0] not in KNOWN_LIBRARIES):
            yield HF_REMOTE_CODE.finding(
                src.path, f"diffusers component {component!r} comes from {spec[0]!r}, which is "
                "not a known library: the pipeline loads it as repository code "
                "(custom_pipeline / trust_remote_code)", evidence=f"{spec[0]}.{spec[1]}",
                member=src.member)
    pipeline = obj.get("_class_name")
    if isinstance(pipeline, list) and len(pipeline) == 2:
        yield HF_REMOTE_CODE.finding(src.path, f"pipeline class {pipeline!r} is repository code",
                                     evidence=".".join(map(str, pipeline)), member=src.member)


def _index(obj: dict[str, Any], src: Source) -> Iterator[Finding]:
    weight_map = obj.get("weight_map")
    if not isinstance(weight_map, dict):
        return
    bad = sorted({v for v in weight_map.values() if isinstance(v, str) and escapes(v)})
    for name in bad[:20]:
        yield HF_INDEX_TRAVERSAL.finding(
            src.path, f"weight_map shard {name!r} lies outside the model folder", evidence=name,
            member=src.member)


def escapes(name: str) -> bool:
    """True for absolute paths (POSIX, Windows drive, UNC) and any '..' component."""
    norm = name.replace("\\", "/")
    return (norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) is not None
            or ".." in norm.split("/"))


@register_batch(Kind.PYTHON)
def dataset_scripts(targets: list[Target], budget: Budget) -> Iterator[Finding]:
    """A `datasets` builder script runs when its folder is passed to load_dataset."""
    for target in targets:
        budget.check_time()
        try:
            with open(target.fs_path, "rb") as fh:
                head = fh.read(512 * 1024)
        except OSError:
            continue  # reported by the per-file code analyzer
        m = _BUILDER.search(head)
        if m is None or b"datasets" not in head:
            continue
        named = target.fs_path.stem == target.fs_path.parent.name
        how = (f"load_dataset('{target.fs_path.parent.name}') runs it" if named
               else "load_dataset runs it when given this script or its folder")
        yield HF_DATASET_SCRIPT.finding(
            target.path, f"dataset loading script (defines a {m.group(1).decode()}): {how}",
            evidence=m.group(1).decode())
