"""What a Hugging Face remote-code module can do when `trust_remote_code=True` imports it.

Training code legitimately calls subprocess or downloads files, so the general code checks
stay quiet on plain API use. A module named by `auto_map` is different: it runs inside
`from_pretrained`, where process, network, dynamic-code and native-library calls have no
business. `ast` only parses the file; nothing is imported or run.
"""

from __future__ import annotations

import ast
from pathlib import Path

MAX_BYTES = 4 * 1024 * 1024

# Qualified-name prefixes that do not belong in model code loaded from a hub.
DANGEROUS_PREFIXES = (
    "os.system", "os.popen", "os.exec", "os.spawn", "os.fork", "os.kill", "os.putenv",
    "os.remove", "os.unlink", "os.rmdir", "os.chmod", "os.dup2", "posix.", "subprocess.",
    "pty.", "socket.", "urllib.request.", "urllib2.", "requests.", "httpx.", "http.client.",
    "ftplib.", "smtplib.", "paramiko.", "ctypes.", "cffi.", "marshal.loads", "pickle.loads",
    "pickle.load", "dill.", "cloudpickle.", "shutil.rmtree", "webbrowser.", "runpy.",
    "importlib.import_module", "builtins.eval", "builtins.exec", "builtins.compile",
    "builtins.__import__", "types.CodeType", "types.FunctionType", "base64.b64decode",
    "codecs.decode", "zlib.decompress",
)


def _qualify(node: ast.expr, aliases: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    head = aliases.get(node.id, f"builtins.{node.id}" if node.id in
                       ("eval", "exec", "compile", "__import__") else node.id)
    return ".".join([head, *reversed(parts)])


def dangerous_calls(path: Path) -> list[tuple[int, str]]:
    """(line, qualified name) of every call in the module to a dangerous API."""
    try:
        if path.stat().st_size > MAX_BYTES:
            return [(1, f"module larger than {MAX_BYTES // (1024 * 1024)} MiB (not inspected)")]
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return [(1, f"module could not be parsed ({type(exc).__name__})")]
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else \
                    a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _qualify(node.func, aliases)
            if name and name.startswith(DANGEROUS_PREFIXES):
                found.append((node.lineno, name))
    return sorted(set(found))
