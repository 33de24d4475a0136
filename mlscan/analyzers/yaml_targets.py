"""YAML configs: Hydra/NeMo `_target_` callables and PyYAML python/* tags.

The YAML is only *composed* into nodes (no object is constructed, tags are not resolved),
with a node budget so alias bombs stay cheap.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mlscan.analyzers.base import Source, register
from mlscan.analyzers.templates import read_text
from mlscan.context import Budget
from mlscan.errors import LimitExceeded
from mlscan.kinds import Kind
from mlscan.model import Finding, Severity
from mlscan.rulesets.hf_formats import YAML_PYTHON_TAG, YAML_TARGET_DANGEROUS, YAML_TARGET_UNLISTED
from mlscan.rulesets.meta import MALFORMED

ALLOWED_ROOTS = frozenset({
    "nemo", "torch", "torchvision", "torchaudio", "torchmetrics", "lightning",
    "pytorch_lightning", "lightning_fabric", "omegaconf", "hydra", "transformers", "megatron",
    "apex", "timm", "diffusers", "datasets", "peft", "accelerate", "deepspeed", "tokenizers",
    "sentencepiece", "numpy", "sklearn", "einops", "nemo_aligner", "nemo_curator",
    "nemo_run", "nemo_skills", "nemo_text_processing", "lhotse", "wandb",
})
DANGEROUS_ROOTS = frozenset({
    "os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "importlib", "runpy",
    "shutil", "pty", "socket", "pickle", "_pickle", "marshal", "ctypes", "code", "codeop",
    "webbrowser", "http", "urllib", "requests", "pathlib", "io", "_io", "tempfile", "pdb",
    "multiprocessing", "asyncio", "_posixsubprocess", "dill", "joblib", "shelve", "commands",
    "platform", "signal", "pydoc", "pkgutil", "zipimport", "inspect", "types", "operator",
})
DANGEROUS_NAMES = frozenset({
    "torch.load", "torch.hub.load", "torch.jit.load", "numpy.load", "numpy.f2py",
    "torch.utils.collect_env.run", "hydra.utils.call", "omegaconf.OmegaConf.load",
    "transformers.AutoModel.from_pretrained", "eval", "exec", "compile", "__import__",
    "functools.partial",
})
# Resolvers: the real target is in another key.
INDIRECT = {"hydra.utils.get_method": "path", "hydra.utils.get_class": "path",
            "hydra.utils.get_object": "path", "hydra.utils.instantiate": "config",
            "functools.partial": "func"}
MAX_NODES = 1_000_000
MAX_YAML = 16 << 20
PY_TAG = "tag:yaml.org,2002:python/"


@register(Kind.YAML)
def analyze_yaml(src: Source, budget: Budget) -> Iterator[Finding]:
    text = read_text(src, budget)
    if "_target_" not in text and "!!python" not in text and PY_TAG not in text \
            and "!python" not in text:
        return
    if len(text) > MAX_YAML:
        raise LimitExceeded(f"YAML config larger than {MAX_YAML >> 20} MiB; not parsed")
    import yaml  # a declared dependency; imported lazily for start-up time

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available
    try:
        docs = list(yaml.compose_all(text, Loader=loader))
    except yaml.YAMLError as exc:
        # Template-generated YAML (Helm, Jinja) is often not YAML at all: report quietly.
        mark = getattr(exc, "problem_mark", None)
        yield MALFORMED.finding(src.path, f"{src.name}: YAML with _target_/python tags does "
                                f"not parse: {str(exc).splitlines()[0]}", member=src.member,
                                evidence="yaml-syntax", severity=Severity.LOW,
                                line=mark.line + 1 if mark is not None else None)
        return
    seen: set[int] = set()
    count = 0
    stack: list[Any] = [d for d in docs if d is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        count += 1
        if count > MAX_NODES:
            raise LimitExceeded(f"YAML has more than {MAX_NODES} nodes")
        if count % 20_000 == 0:
            budget.check_time()
        tag = getattr(node, "tag", "") or ""
        if tag.startswith(PY_TAG):
            yield YAML_PYTHON_TAG.finding(
                src.path, f"{src.name}: YAML tag !!{tag[len('tag:yaml.org,2002:'):]} runs "
                "Python when loaded with yaml.load/unsafe_load", evidence=tag,
                member=src.member, line=node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            yield from _mapping(node, src)
            for k, v in node.value:
                stack.extend((k, v))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _scalars(node: Any) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for k, v in node.value:
        if hasattr(k, "value") and isinstance(k.value, str) and isinstance(v.value, str):
            out[k.value] = (v.value, v.start_mark.line + 1)
    return out


def _mapping(node: Any, src: Source) -> Iterator[Finding]:
    keys = _scalars(node)
    if "_target_" not in keys:
        return
    target, line = keys["_target_"]
    target = target.strip()
    chain = target
    if target in INDIRECT and INDIRECT[target] in keys:
        inner = keys[INDIRECT[target]][0].strip()
        chain, target = f"{target} -> {inner}", inner
    verdict = judge(target)
    if verdict == "dangerous":
        yield YAML_TARGET_DANGEROUS.finding(
            src.path, f"{src.name}: _target_ {chain!r} is instantiated (imported and called) "
            "when the config is loaded", evidence=chain, member=src.member, line=line)
    elif verdict == "unlisted":
        yield YAML_TARGET_UNLISTED.finding(
            src.path, f"{src.name}: _target_ {chain!r} imports and calls code outside known ML "
            "libraries", evidence=chain, member=src.member, line=line)


def judge(target: str) -> str:
    """'dangerous', 'unlisted' or 'ok' for a dotted target name."""
    name = target.replace(":", ".")
    root = name.split(".")[0]
    if root in DANGEROUS_ROOTS or name in DANGEROUS_NAMES or name in INDIRECT:
        return "dangerous"
    if any(name.endswith("." + bad) or name == bad for bad in ("system", "popen", "eval",
                                                               "exec", "load_model")):
        return "dangerous"
    return "ok" if root in ALLOWED_ROOTS else "unlisted"
