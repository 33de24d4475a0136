"""Keras model configs (JSON): Lambda bytecode, foreign modules, safe_mode bypass gadgets.

Used for `.keras` config.json, HDF5 `model_config` and SavedModel Keras metadata. The
marshalled Lambda bytecode is decoded from base64 and its names are read from the marshal
bytes; it is never unmarshalled or run.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Iterator
from typing import Any

from mlscan.analyzers.base import Source, scan_source
from mlscan.context import Budget
from mlscan.model import Finding, Severity
from mlscan.rulesets.model_formats import KERAS_EXTERNAL_MODULE, KERAS_GADGET, KERAS_LAMBDA

KERAS_ROOTS = frozenset({"keras", "tf_keras", "keras_nlp", "keras_hub", "keras_cv", "keras_core",
                         "tensorflow", "tensorflow_addons", "tensorflow_hub"})
DANGEROUS_ROOTS = frozenset({
    "os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "importlib", "runpy",
    "shutil", "pty", "socket", "pickle", "_pickle", "marshal", "ctypes", "code", "codeop",
    "webbrowser", "http", "urllib", "requests", "tempfile", "io", "_io", "pathlib", "glob",
    "commands", "multiprocessing", "signal", "functools", "operator", "types", "inspect",
    "pydoc", "pkgutil", "zipimport", "dill", "joblib", "torch", "numpy", "pdb", "timeit",
    "platform", "asyncio", "_posixsubprocess", "ssl", "ftplib", "smtplib", "telnetlib",
})
# Values that name a safe_mode bypass wherever they appear in a config.
GADGETS = {
    "enable_unsafe_deserialization": "turns off safe_mode for everything loaded afterwards",
    "get_file": "downloads a file (and can extract it) while the model loads",
    "load_model": "loads another model (with its own payloads) while this one loads",
    "TorchModuleWrapper": "rebuilds a torch module with torch.load (a pickle)",
    "TFSMLayer": "loads an external TensorFlow SavedModel whose graph then runs",
}
# Preprocessing layers whose `vocabulary` may be a path read at load time.
LOOKUP_LAYERS = frozenset({"StringLookup", "IntegerLookup", "IndexLookup", "TextVectorization"})
# Names in Lambda bytecode that mean commands, code loading, files or network.
RISKY_NAMES = frozenset({
    "os", "posix", "nt", "system", "popen", "Popen", "subprocess", "exec", "eval", "compile",
    "__import__", "import_module", "open", "socket", "urlopen", "urllib", "requests",
    "builtins", "__builtins__", "getattr", "globals", "pty", "spawn", "check_output", "run",
    "shutil", "rmtree", "remove", "unlink", "marshal", "pickle", "loads", "b64decode",
    "ctypes", "sys", "connect", "environ", "exit", "_exit", "kill", "write", "getenv",
})
MAX_NODES = 2_000_000
_MODULE = re.compile(r"^[A-Za-z_][\w.]{0,199}$")
_B64 = re.compile(r"^[A-Za-z0-9+/=\s]{16,}$")


def looks_like_keras(obj: Any) -> bool:
    return isinstance(obj, dict) and "class_name" in obj and "config" in obj


def check_config(obj: Any, src: Source, budget: Budget, where: str) -> Iterator[Finding]:
    """Findings for one parsed Keras config (any nesting of dicts/lists)."""
    seen: set[tuple[str, str]] = set()
    for f in _walk(obj, src, budget, where):
        key = (f.rule_id, f.evidence)
        if key not in seen:
            seen.add(key)
            yield f


def _walk(obj: Any, src: Source, budget: Budget, where: str) -> Iterator[Finding]:
    stack = [obj]
    visited = 0
    while stack:
        node = stack.pop()
        visited += 1
        if visited % 10_000 == 0:
            budget.check_time()
        if visited > MAX_NODES:
            return
        if isinstance(node, dict):
            yield from _check_dict(node, src, budget, where)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            yield from _check_string(node, src, where)


def _check_string(value: str, src: Source, where: str) -> Iterator[Finding]:
    name = value.rsplit(".", 1)[-1]
    if name in GADGETS and len(value) < 200:
        yield KERAS_GADGET.finding(src.path, f"{where}: config references {value!r}: "
                                   f"{GADGETS[name]}", evidence=value, member=src.member)


def _check_dict(d: dict[str, Any], src: Source, budget: Budget, where: str) -> Iterator[Finding]:
    cls = d.get("class_name")
    config = d.get("config")
    if cls == "Lambda" and isinstance(config, dict):
        yield from _lambda(config, src, where)
    if cls == "TorchModuleWrapper" and isinstance(config, dict):
        yield from _torch_wrapper(config, src, budget, where)
    if cls in LOOKUP_LAYERS and isinstance(config, dict):
        vocab = config.get("vocabulary")
        if isinstance(vocab, str) and vocab:
            yield KERAS_GADGET.finding(
                src.path, f"{where}: {cls} layer reads its vocabulary from the file {vocab!r} "
                "while loading (arbitrary file read)", evidence=f"{cls} vocabulary {vocab}",
                member=src.member, severity=Severity.HIGH)
    # Serialized objects carry class_name; a Keras 2 Lambda config names its function's
    # module beside `function`. Other "module" keys are data (TorchModuleWrapper's pickle).
    # (For bytecode lambdas `module` only names the globals to use: MLS230 covers them.)
    lambda_cfg = "function_type" in d and d.get("function_type") != "lambda"
    if cls is not None or lambda_cfg:
        for key in ("module", "fn_module", "function_module", "output_shape_module"):
            module = d.get(key)
            if not (isinstance(module, str) and _MODULE.match(module)):
                continue
            attr = config if cls == "function" and isinstance(config, str) else cls
            if lambda_cfg and isinstance(d.get("function"), str):
                attr = d["function"]
            target = f"{module}.{attr}" if isinstance(attr, str) and attr else module
            yield from _module(module, target, key, src, where)
    registered = d.get("registered_name")
    if isinstance(registered, str) and ">" in registered and "module" not in d:
        package = registered.split(">", 1)[0]
        if package.split(".")[0] not in KERAS_ROOTS and package != "Custom":
            yield KERAS_EXTERNAL_MODULE.finding(
                src.path, f"{where}: registered_name {registered!r} needs objects registered "
                f"by package {package!r}", evidence=registered, member=src.member,
                severity=Severity.LOW)


def _module(module: str, target: str, key: str, src: Source, where: str) -> Iterator[Finding]:
    root = module.split(".")[0]
    if root in KERAS_ROOTS or root.startswith("keras_") or root == "__main__":
        return  # __main__ is already imported: nothing new runs
    if root in DANGEROUS_ROOTS:
        yield KERAS_EXTERNAL_MODULE.finding(
            src.path, f"{where}: {key} {module!r} makes Keras import and use {target!r} on load",
            evidence=target, member=src.member, severity=Severity.CRITICAL)
    else:
        yield KERAS_EXTERNAL_MODULE.finding(
            src.path, f"{where}: {key} {module!r} is imported on load (code outside Keras)",
            evidence=target, member=src.member)


def _lambda(config: dict[str, Any], src: Source, where: str) -> Iterator[Finding]:
    name = config.get("name", "?")
    fn = config.get("function")
    code: str | None = None
    if isinstance(fn, list) and fn and isinstance(fn[0], str):
        code = fn[0]  # Keras 2: [base64 marshal, defaults, closure]
    elif isinstance(fn, str) and config.get("function_type", "lambda") == "lambda":
        code = fn
    elif isinstance(fn, dict):
        inner = fn.get("config")
        if isinstance(inner, dict) and isinstance(inner.get("code"), str):
            code = inner["code"]  # Keras 3: {"class_name": "__lambda__", "config": {"code"}}
    if code is None:
        return  # a named function: reported through its module reference
    names = bytecode_names(code)
    risky = sorted(n for n in names if n in RISKY_NAMES)
    sev = Severity.CRITICAL if risky else Severity.HIGH
    shown = ", ".join(risky or sorted(names)[:12]) or "(none readable)"
    yield KERAS_LAMBDA.finding(
        src.path, f"{where}: Lambda layer {name!r} carries Python bytecode that runs on load; "
        f"names used: {shown}", evidence=f"Lambda {name}: {shown}", member=src.member,
        severity=sev)


def b64(text: str, limit: int = 64 << 20) -> bytes | None:
    if len(text) > limit * 2 or not _B64.match(text[:4096]):
        return None
    try:
        return base64.b64decode(text.encode("ascii", "ignore"), validate=False)
    except (binascii.Error, ValueError):
        return None


def bytecode_names(code_b64: str) -> set[str]:
    """Identifiers stored as marshal strings in a base64 code object (never unmarshalled)."""
    raw = b64(code_b64) or b""
    names: set[str] = set()
    i, n = 0, len(raw)
    while i < n:
        t = raw[i] & 0x7F
        if t in (0x7A, 0x5A) and i + 1 < n:  # short ascii (interned)
            size, body = raw[i + 1], i + 2
        elif t in (0x61, 0x41, 0x75, 0x74) and i + 4 < n:  # ascii/unicode/interned
            size, body = int.from_bytes(raw[i + 1:i + 5], "little"), i + 5
        else:
            i += 1
            continue
        chunk = raw[body:body + size] if 0 < size <= 200 else b""
        if chunk and re.fullmatch(rb"[A-Za-z_][A-Za-z0-9_]*", chunk):
            names.add(chunk.decode("ascii"))
            i = body + size
        else:
            i += 1
    return names


def _torch_wrapper(config: dict[str, Any], src: Source, budget: Budget,
                   where: str) -> Iterator[Finding]:
    module = config.get("module")
    if isinstance(module, str) and (payload := b64(module)) is not None:
        # The wrapped module is a torch pickle: hand it to the pickle/zip analyzers.
        child = src.child(io.BytesIO(payload), "TorchModuleWrapper.module", len(payload))
        yield from scan_source(child, budget)
    yield KERAS_GADGET.finding(
        src.path, f"{where}: TorchModuleWrapper layer {config.get('name', '?')!r}: "
        f"{GADGETS['TorchModuleWrapper']}", evidence="TorchModuleWrapper", member=src.member)
