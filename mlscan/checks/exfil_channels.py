"""Secrets and commands through channels the payload checks do not follow (session 21).

- MLS412: a secret environment variable (AWS secret key, a token) encoded into a host name
  that is resolved (`socket.getaddrinfo(f"{hex}.{suffix}", 443)`): DNS exfiltration, which
  passes most egress filters.
- MLS412: a service's token (`HF_TOKEN`, `WANDB_API_KEY`, `GITHUB_TOKEN`...) sent as a
  header, query parameter or body field to a host written in the code that is not that
  service's (also when a small local helper reads the token).
- MLS412: a credential file attached to an e-mail (`msg.add_attachment(p.read_bytes())`
  with `p` under `~/.aws`, `~/.ssh`...).
- MLS413: `pip install --extra-index-url <host>` run by the training code: packages from an
  index the code names run on import (and shadow public ones of the same name).
- MLS410: a command read from a socket or a request handler's stream run by a shell or
  subprocess: whoever connects runs commands on the node.
"""

from __future__ import annotations

import ast
import itertools
import re

from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.exfil import _CREDENTIAL, CRED_EXFIL, DOWNLOAD_EXEC, REVERSE_SHELL
from mlscan.checks.names import last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.triggers import env_key
from mlscan.model import Severity

_RESOLVERS = frozenset({"socket.gethostbyname", "socket.gethostbyname_ex", "socket.getaddrinfo",
                        "dns.resolver.resolve", "dns.resolver.query", "socket.create_connection"})
_SECRET_VAR = re.compile(r"(?i)secret|token|passw|api_?key|access_key|credential|private_key")
_SERVICES: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = (
    (re.compile(r"(?i)^(HF_TOKEN|HUGGING_FACE_HUB_TOKEN|HF_API_TOKEN|HUGGINGFACE_TOKEN)$"),
     re.compile(r"(?i)huggingface|(^|[./])hf\.co|hf-mirror")),
    (re.compile(r"(?i)^WANDB_API_KEY$"), re.compile(r"(?i)wandb")),
    (re.compile(r"(?i)^(GITHUB_TOKEN|GH_TOKEN)$"), re.compile(r"(?i)github")),
    (re.compile(r"(?i)^OPENAI_API_KEY$"), re.compile(r"(?i)openai")),
    (re.compile(r"(?i)^ANTHROPIC_API_KEY$"), re.compile(r"(?i)anthropic")),
)
_CARRIERS = frozenset({"headers", "params", "data", "json"})
"""Request parts that carry a value to the host (a token for another host leaks in any)."""
_ENCODER = re.compile(r"^(b16|b32|b64|b85|urlsafe_b64)encode$|^hex(lify)?$")
_SENDERS = ("requests.", "httpx.", "urllib.request.Request", "aiohttp.")
_SHELLS = ("subprocess.", "os.system", "os.popen", "asyncio.create_subprocess_shell")
_INBOUND = re.compile(r"\.rfile\b|\.recv\(|\.recvfrom\(|\.recv_into\(|\.makefile\(")
_RECEIVERS = frozenset({"recv", "recvfrom", "recv_into", "readline", "read", "readuntil",
                        "readexactly"})
_PEER = re.compile(r"(?i)sock|conn|rfile|client|peer|^self\.request$|reader")


def _env_names(expr: ast.AST, ctx: Ctx, levels: int = 2) -> list[str]:
    """Environment variable names read in `expr` or the values its names hold (`levels`
    assignments back)."""
    found = []
    for node in ctx.walk_values(expr, depth=2 - levels, methods=True):
        if (key := env_key(node, ctx.names)) is not None:
            found.append(key)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and len(fns := ctx.defs.get(node.func.id, [])) == 1 and len(fns[0].body) <= 8):
            # `_token()` reading os.environ["GITHUB_TOKEN"] into a local it returns
            found += [key for n in subnodes(fns[0]) if (key := env_key(n, ctx.names))]
    return found


def _hosts(expr: ast.AST, ctx: Ctx) -> list[str]:
    """Host names of the URLs written in `expr` (followed through names)."""
    found = []
    for node in ctx.walk_values(expr):
        value = literal(node)
        if isinstance(value, str) and (m := re.match(r"(?i)^[a-z]+://([^/:?#]+)", value)):
            found.append(m.group(1))
    return found


class SecretChannels(Check):
    rules = (CRED_EXFIL, DOWNLOAD_EXEC, REVERSE_SHELL)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        attr = last_attr(node.func)
        if attr in ("gethostbyname", "gethostbyname_ex", "getaddrinfo", "resolve", "query",
                    "create_connection"):
            self._dns(node, ctx)
        elif attr in ("add_attachment", "attach") and node.args and ctx.mentions("smtplib"):
            self._attached(node, ctx)
        elif (node.args and any(kw.arg in _CARRIERS for kw in node.keywords)
              and ctx.names.call_name(node).startswith(_SENDERS)):
            self._foreign_token(node, ctx)
        name = ctx.names.call_name(node) if node.args else ""
        if name.startswith(_SHELLS):
            self._extra_index(node, ctx)
            self._inbound_command(node, name, ctx)

    @staticmethod
    def _dns(node: ast.Call, ctx: Ctx) -> None:
        name = ctx.names.call_name(node)
        if name not in _RESOLVERS or not node.args:
            return
        host = node.args[0]
        if isinstance(host, ast.Tuple) and host.elts:
            host = host.elts[0]  # create_connection((host, port))
        # label = ".".join(...hexed...); hexed = ident.encode().hex(); ident = os.environ...
        secrets = [k for k in _env_names(host, ctx, levels=4) if _SECRET_VAR.search(k)]
        if not secrets:  # `client_id = base32(token.encode())`: a secret parameter, encoded
            values = ctx.walk_values(host)
            if any(isinstance(n, ast.Call) and _ENCODER.search(last_attr(n.func))
                   for n in values):
                secrets = [n.id for n in values if isinstance(n, ast.Name)
                           and _SECRET_VAR.search(n.id)][:1]
        if secrets:
            ctx.report(CRED_EXFIL, node, f"{secrets[0]} encoded into a host name that is "
                       "resolved: the secret leaves through DNS queries (DNS exfiltration), "
                       "past most egress filters", severity=Severity.HIGH)

    @staticmethod
    def _attached(node: ast.Call, ctx: Ctx) -> None:
        for n in ctx.walk_values(node.args[0]):
            value = literal(n)
            if isinstance(value, str) and _CREDENTIAL.search(value):
                ctx.report(CRED_EXFIL, node, f"a credential file ({value.strip('/~')}) is "
                           "attached to an e-mail this code sends", severity=Severity.HIGH)
                return

    @staticmethod
    def _foreign_token(node: ast.Call, ctx: Ctx) -> None:
        hosts: list[str] | None = None
        for kw in node.keywords:
            if kw.arg not in _CARRIERS:
                continue
            tokens = _env_names(kw.value, ctx)
            if not tokens:
                continue
            if hosts is None:
                hosts = _hosts(node.args[0], ctx)  # (once per call, not per carrier)
            for token in tokens:
                for names, domain in _SERVICES:
                    if names.match(token) and hosts and not any(domain.search(h) for h in hosts):
                        ctx.report(CRED_EXFIL, node, f"{token} sent ({kw.arg}=) to {hosts[0]}, "
                                   "which is not the service the token is for: whoever runs "
                                   "that host gets the account", severity=Severity.MEDIUM)
                        return

    @staticmethod
    def _extra_index(node: ast.Call, ctx: Ctx) -> None:
        words = node.args[0]
        items = words.elts if isinstance(words, (ast.List, ast.Tuple)) else []
        texts = [literal(w) for w in items]
        if "install" not in texts or not any(t in ("pip", "-m") for t in texts):
            return
        for flag, value in itertools.pairwise(texts):
            if flag in ("--extra-index-url", "--index-url", "-i", "-f", "--find-links") and (
                    isinstance(value, str) and re.match(r"(?i)^https?://", value)
                    and not re.search(r"(?i)pypi\.org|pythonhosted\.org|download\.pytorch\.org",
                                      value)):
                ctx.report(DOWNLOAD_EXEC, node, f"pip install from {value[:60]} at run time: "
                           "packages from an index the code names run on import (and can "
                           "shadow public packages of the same name)", severity=Severity.MEDIUM)
                return

    @staticmethod
    def _inbound_command(node: ast.Call, name: str, ctx: Ctx) -> None:
        command = node.args[0]
        for n in ctx.walk_values(command):
            if isinstance(n, ast.Name) and (loop := ctx.loop_source(n.id)) is not None and (
                    _INBOUND.search(ast.unparse(loop))):
                break  # for line in self.rfile: cmd = line.decode()
            if (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                    and n.func.attr in _RECEIVERS and _PEER.search(ast.unparse(n.func.value))):
                break  # cmd = conn.recv(4096).decode()
        else:
            return
        ctx.report(REVERSE_SHELL, node, f"{name}() runs a command read from a network "
                   "connection: whoever connects runs commands on this node (a backdoor)",
                   severity=Severity.HIGH)
