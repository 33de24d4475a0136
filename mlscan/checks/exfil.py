"""MLS411/MLS412 through data flow: the environment or credentials reaching a network send.

The semgrep rules follow taint inside one function. Stealers in training code build the
payload in a helper (`def _profile(): return {k: v for k, v in os.environ.items()}`), keep it
on `self`, or wrap it in a `urllib.request.Request` first; this check follows names, `self.x`
attributes and what small local helpers return, a few steps deep, from each send call back
to its sources. Findings share the semgrep rules' codes (one finding per rule and line).
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Callable

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import Ctx
from mlscan.checks.names import (
    arg,
    bound_values,
    getattr_name,
    kwarg,
    last_attr,
    literal,
    param_names,
    root_name,
)
from mlscan.checks.nodes import child_nodes, subnodes
from mlscan.checks.normalize import const_text
from mlscan.checks.stalls import TRIGGERED_ACTION, report_arming
from mlscan.model import Rule, Severity

_SENDS = ("requests.", "httpx.", "urllib.request.urlopen", "urllib.request.Request",
          "urllib.request.build_opener",
          "urllib3.", "aiohttp.", "http.client.")
_SEND_METHODS = frozenset({"post", "put", "patch", "request", "urlopen", "sendall", "send",
                           "sendto", "upload_file", "upload_fileobj", "put_object",
                           "storbinary", "storlines", "send_message", "sendmail"})
_TRACKERS = ("wandb.init", "wandb.config.update", "mlflow.log_param", "comet_ml.",
             "neptune.init")
_TRACKER_METHODS = frozenset({"log_hyperparams", "init_trackers"})
"""Experiment trackers: what they are given is uploaded to the tracker's server."""
_CREDENTIAL = re.compile(r"\.ssh\b|id_rsa|id_ed25519|id_ecdsa|authorized_keys|\.aws\b|"
                         r"credentials|\.netrc|\.git-credentials|\.pypirc|\.kube\b|"
                         r"huggingface/token|\.docker/config|serviceaccount/token|"
                         r"(^|/)\.env$")
_SECRET_PREFIX = re.compile(r"(?i)^(aws|hf|hugging|wandb|openai|anthropic|azure|gcp|google|gh|"
                            r"github|gitlab|slack|mlflow|comet|neptune|db|database|pg|mysql|"
                            r"redis|s3|api)|token|secret|key|pass|cred|auth")
_CURL = re.compile(r"^(curl|wget|scp|rsync|nc|ncat)$")
_CLIENT = re.compile(r"(?i)sess|client|http|sock|conn|s3|bucket|api|request|ftp|smtp|^s$")
"""Receivers of .post/.put/.send that talk to the network (a queue's .put does not)."""
_MAX_DEPTH = 6


def _rules() -> tuple[Rule, Rule, Rule, Rule, Rule, Rule, Rule, Rule, Rule, Rule]:
    from mlscan.rulesets.semgrep_rules import rules_by_code

    by_code = rules_by_code()
    return (by_code["MLS411"], by_code["MLS412"], by_code["MLS413"], by_code["MLS401"],
            by_code["MLS402"], by_code["MLS422"], by_code["MLS403"], by_code["MLS410"],
            by_code["MLS414"], by_code["MLS404"])


(ENV_EXFIL, CRED_EXFIL, DOWNLOAD_EXEC, DECODED_EXEC, BUILTIN_LOOKUP, PRELOAD,
 HIDDEN_IMPORT, REVERSE_SHELL, AUTHORIZED_KEYS, CODE_OBJECT) = _rules()


class AssembledAuthorizedKeys(Check):
    """`keys = ssh / ("authorized" + "_keys")`, then `with keys.open("a") as fh:
    fh.write(KEY)`: the semgrep rule looks for the spelled-out name; the analyzer sees the
    folded one (normalize joins the pieces) and reports the write."""

    rules = (AUTHORIZED_KEYS,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "copyfileobj"
                and len(node.args) >= 2):  # shutil.copyfileobj(io.StringIO(key), fh)
            target: ast.AST | None = _opened_path(node.args[1], ctx)
        elif not (isinstance(func, ast.Attribute) and func.attr in (
                "write", "writelines", "write_text", "write_bytes") and node.args):
            return
        else:
            target = func.value
        if func.attr in ("write", "writelines"):
            target = _opened_path(func.value, ctx)
        if target is not None and _assembled_keys_path(target, ctx):
            ctx.report(AUTHORIZED_KEYS, node, "writes into ~/.ssh/authorized_keys under a name "
                       "assembled from pieces: a key added there opens a login to this machine")


def _opened_path(handle: ast.expr, ctx: Ctx) -> ast.AST | None:
    """The path of `with open(p, "a") as fh` / `with p.open("a") as fh` for handle `fh`."""
    if not isinstance(handle, ast.Name):
        return None
    fn = ctx.frame.node if ctx.frame.node is not None else ctx.tree
    for n in subnodes(fn) if fn is not None else ():
        if isinstance(n, ast.withitem) and isinstance(n.optional_vars, ast.Name) and (
                n.optional_vars.id == handle.id) and isinstance(n.context_expr, ast.Call):
            opener = n.context_expr
            if isinstance(opener.func, ast.Name) and opener.func.id == "open" and opener.args:
                return opener.args[0]
            if isinstance(opener.func, ast.Attribute) and opener.func.attr == "open":
                return opener.func.value
    return None


def _assembled_keys_path(path: ast.AST, ctx: Ctx) -> bool:
    """The path holds "authorized_keys" built from pieces (a spelled-out name is semgrep's)."""
    values = [path]
    if isinstance(path, ast.Name) and (held := ctx.lookup(path.id)) is not None:
        values.append(held)
    if any(isinstance(n, (ast.BinOp, ast.Call)) and "authorized_keys" in (
            const_text(n, {}) or "") for v in values for n in subnodes(v)):
        return True
    # d / _SSH_FILES["trust"]: the name comes from a table (normalize folded the lookup)
    if any(isinstance(n, ast.Constant) and getattr(n, "folded", False)
           and "authorized_keys" in str(n.value) for v in values for n in subnodes(v)):
        return True
    # Path.home().joinpath(*_SSH_LAYOUT) with _SSH_LAYOUT = (".ssh", "authorized_keys")
    return any(isinstance(n, ast.Starred) and isinstance(n.value, ast.Name) and isinstance(
        held := ctx.lookup(n.value.id), (ast.Tuple, ast.List)) and any(
            literal(e) == "authorized_keys" for e in held.elts)
        for v in values for n in subnodes(v))

_SPAWNS = ("pty.spawn", "os.execv", "os.execvp", "os.execve", "os.execl", "os.execlp",
           "os.system", "subprocess.call", "subprocess.run", "subprocess.Popen")


class ReverseShell(Check):
    """`term = __import__(bytes((112, 116, 121)).decode())` ... `os.dup2(sock.fileno(), fd)`
    ... `term.spawn(shell)`: a shell started once the standard streams are a socket, under
    names the semgrep rule cannot see (module aliases, assembled imports)."""

    rules = (REVERSE_SHELL,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        name = ctx.names.call_name(node)
        if name.startswith("subprocess.") and (port := _sshd_forwarded(node)):
            ctx.report(REVERSE_SHELL, node, f"ssh -R {port[:40]} forwards a remote port to this "
                       "machine's SSH server: anyone on the other end can log in here "
                       "(a reverse tunnel past the firewall)", severity=Severity.HIGH)
            return
        if name == "os.dup2" and node.args and (
                ast.unparse(node.func) != name or getattr(node, "made", False)):
            owner = _stream_owner(node.args[0], ctx)  # map(partial(os.dup2, s.fileno()), ...)
            if isinstance(owner, ast.Name) and _is_socket(owner, ctx):
                ctx.report(REVERSE_SHELL, node, "os.dup2() puts a network socket on this "
                           "process's standard streams: whatever it runs next is driven "
                           "remotely (reverse shell)", severity=Severity.CRITICAL)
            return
        values = [k.value for k in node.keywords if k.arg in ("stdin", "stdout", "stderr")]
        owners = [_stream_owner(v, ctx) for v in values]
        through_name = any(isinstance(v, ast.Name) and v is not o
                           for v, o in zip(values, owners, strict=True))  # fd = s.fileno()
        spelled = name.startswith("subprocess.") and ast.unparse(node.func) == name and (
            not through_name or (node.args and "-i" in ast.unparse(node.args[0])))
        # (subprocess.Popen(..., stdin=conn) or ([sh, "-i"], ...) as written are semgrep's)
        if len(owners) >= 2 and not spelled and len({ast.dump(o) for o in owners}) == 1 and (
                _is_socket(owners[0], ctx) if isinstance(owners[0], ast.Name)
                else _opens_socket(owners[0], ctx)):
            ctx.report(REVERSE_SHELL, node, f"{ast.unparse(node.func)[:40]}() starts a program "
                       "whose standard streams are a network socket: a remote party drives it "
                       "(reverse shell)", severity=Severity.CRITICAL)
            return  # spawn([shell, "-i"], stdin=conn, stdout=conn, stderr=conn)
        if not name.startswith(_SPAWNS) or ctx.frame.node is None or (
                ast.unparse(node.func) == name):
            return  # (spelled as written, the semgrep rule reports it)
        fn = ctx.frame.node
        if any(isinstance(n, ast.Call) and ctx.names.call_name(n) == "os.dup2" and n.args
               and isinstance(n.args[0], ast.Call) and last_attr(n.args[0].func) == "fileno"
               and getattr(n, "lineno", 0) < node.lineno for n in subnodes(fn)) and any(
                isinstance(n, ast.Call) and ctx.names.call_name(n).startswith("socket.")
                for n in subnodes(fn)):
            ctx.report(REVERSE_SHELL, node, f"{name}() starts a program after the standard "
                       "streams were duplicated onto a socket: a remote party drives it "
                       "(reverse shell)", severity=Severity.CRITICAL)


def _stream_owner(value: ast.expr, ctx: Ctx) -> ast.expr:
    """`sock.fileno()` -> `sock`: a child's stream handed over as a file descriptor, also
    through a name (`fd = sock.fileno()`)."""
    held = ctx.lookup(value.id) if isinstance(value, ast.Name) else None
    for candidate in (held, value):
        if (isinstance(candidate, ast.Call) and isinstance(candidate.func, ast.Attribute)
                and candidate.func.attr in ("fileno", "dup") and not candidate.args):
            return candidate.func.value
    return value


def _is_socket(name: ast.Name, ctx: Ctx) -> bool:
    """`conn = socket.create_connection(...)`, `conn, _ = srv.accept()`, `s = socket.socket()`."""
    held = ctx.lookup(name.id)
    if isinstance(held, ast.Subscript):
        held = held.value
    return _opens_socket(held, ctx)


def _opens_socket(held: ast.expr | None, ctx: Ctx) -> bool:
    """Also asyncio's `writer.get_extra_info("socket")`."""
    if isinstance(held, ast.Call) and last_attr(held.func) == "get_extra_info":
        return literal(held.args[0]) == "socket" if held.args else False
    return isinstance(held, ast.Call) and (
        ctx.names.call_name(held).startswith(("socket.create_connection", "socket.socket",
                                              "socket.fromfd"))
        or last_attr(held.func) in ("accept", "create_connection"))


class Exfiltration(Check):
    rules = (ENV_EXFIL, CRED_EXFIL, TRIGGERED_ACTION)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        """`if host.startswith("gpu-prod"): record["env"] = launcher_env()`: the environment
        joins a payload only under a trigger (the send itself runs every time)."""
        target = node.targets[0]
        if (isinstance(target, ast.Subscript) and isinstance(target.value, ast.Attribute)
                and target.value.attr == "headers" and ctx.mentions("environ")):
            found = _Sources(ctx)  # s.headers["X-Context"] = b64(json.dumps(dict(os.environ)))
            found.scan(node.value, 0)
            if found.env:
                ctx.report(ENV_EXFIL, node, "the process environment (tokens included) is put "
                           f"into a request header of {ast.unparse(target.value.value)[:30]}: "
                           "every request sends it")
                return
        if not ctx.conds or not any(isinstance(t, (ast.Subscript, ast.Name))
                                    for t in node.targets) or not ctx.mentions("environ"):
            return
        kinds = ctx.trigger_kinds(ctx.where()) & triggers.STRONG
        if not kinds:
            return
        found = _Sources(ctx)
        found.scan(node.value, 0)
        if found.env:
            ctx.report(TRIGGERED_ACTION, node, "the process environment (tokens included) is "
                       f"added to {ast.unparse(node.targets[0])[:40]} only under a condition on "
                       f"{triggers.describe(kinds)}")

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        sent = _sent_values(node, ctx)
        if not sent:
            if node.args and _credential_helper(node.args[0]):
                ctx.report(CRED_EXFIL, node, "asks git's credential helper for the stored "
                           "password or token (git credential fill): training code has no "
                           "use for it")
            return
        found = _Sources(ctx)
        for value in sent:
            found.scan(value, 0)
        headers = {id(kw.value) for kw in node.keywords if kw.arg in ("headers", "auth")}
        body_secret = next((r for v in sent if id(v) not in headers
                            for r in _secret_env_in_body(v, ctx)), None)
        if body_secret is not None and not (found.env or found.creds):
            what = _env_key(body_secret) or ast.unparse(body_secret)[:30]
            ctx.report(CRED_EXFIL, body_secret, f"the secret {what} is put in the body sent on "
                       f"line {node.lineno}: a token travels to a server that does not need it "
                       "to authenticate this client")
            if getattr(body_secret, "lineno", node.lineno) != node.lineno:
                ctx.report(CRED_EXFIL, node, f"sends a body holding the secret {what} (line "
                           f"{getattr(body_secret, 'lineno', '?')})")
        if found.env or found.creds:
            report_arming(node, last_attr(node.func), ctx.where(), ctx)
        if found.env:
            ctx.report(ENV_EXFIL, node, "the process environment (every variable, tokens "
                       f"included) reaches this network send{found.via}")
            source = found.env_node
            if source is not None and getattr(source, "lineno", node.lineno) != node.lineno:
                ctx.report(ENV_EXFIL, source, "the whole process environment is collected "
                           f"here and sent over the network on line {node.lineno}")
            if isinstance(node.func, ast.Name) and node.func.id in ctx.defs:
                helper = node.func.id  # register(..., env): the send inside a one-use helper

                def inside() -> None:
                    if ctx.call_sites.get(helper, 0) <= 1:
                        for send in _sends_in(helper, ctx):
                            ctx.report(ENV_EXFIL, send, "the process environment passed to "
                                       f"{helper}() on line {node.lineno} is sent here")
                ctx.defer(inside)
        elif found.creds:
            ctx.report(CRED_EXFIL, node, f"credentials ({found.creds}) reach this network "
                       f"send{found.via}")
        if found.creds:  # (with the environment too: the key is the worse half)
            for source in (found.creds_node, *found.creds_reads):
                if source is not None and getattr(source, "lineno", node.lineno) != node.lineno:
                    ctx.report(CRED_EXFIL, source, f"credentials ({found.creds}) are read "
                               f"here and sent over the network on line {node.lineno}")


_SECRET_VAR = re.compile(r"(?i)token|secret|api_?key|password|passwd|credential")


def _env_key(read: ast.AST) -> str:
    key = read.slice if isinstance(read, ast.Subscript) else (
        read.args[0] if isinstance(read, ast.Call) and read.args else None)
    value = literal(key) if key is not None else None
    return value if isinstance(value, str) else ""


def _secret_env_in_body(value: ast.expr, ctx: Ctx, depth: int = 0) -> list[ast.AST]:
    """`{"hub_token": os.environ.get("HF_TOKEN")}` as a request body (a dict value, also
    through a name bound to the dict, and through `Request(url, data=json.dumps(d).encode())`):
    a secret put in the payload, not in an auth header."""
    if isinstance(value, ast.Name):
        held = ctx.lookup(value.id)
        value = held if isinstance(held, ast.expr) else value
    if isinstance(value, ast.Call) and depth < 4:
        attr = last_attr(value.func)
        inner: ast.expr | None = None
        if attr == "Request":
            inner = next((k.value for k in value.keywords if k.arg == "data"), None) or (
                value.args[1] if len(value.args) > 1 else None)
        elif attr in ("dumps", "urlencode") and value.args:
            inner = value.args[0]
        elif attr == "encode" and isinstance(value.func, ast.Attribute):
            inner = value.func.value
        return _secret_env_in_body(inner, ctx, depth + 1) if inner is not None else []
    if not isinstance(value, ast.Dict):
        return []
    out: list[ast.AST] = []
    for key, item in zip(value.keys, value.values, strict=True):
        if key is not None and re.search(r"(?i)header|auth", str(literal(key))):
            continue
        for n in subnodes(item):
            reader = n.value if isinstance(n, ast.Subscript) else (
                n.func.value if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                and n.func.attr == "get" else None)
            if (reader is not None and ctx.names.qualname(reader) == "os.environ"
                    and _SECRET_VAR.search(_env_key(n))):
                out.append(n)
            elif (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                  and n.func.attr == "getenv" and _SECRET_VAR.search(_env_key(n))):
                out.append(n)
            elif isinstance(n, ast.Call) and ctx.names.call_name(n) in _TOKEN_GETTERS:
                out.append(n)  # huggingface_hub.get_token()
    return out


def _credential_path(expr: ast.AST | None, ctx: Ctx, depth: int = 0,
                     local: dict[str, ast.expr] | None = None) -> str:
    """The credential file a path expression names (`~/.ssh/id_ed25519`, `".ss" + "h/id_*"`),
    through the names, loop variables and `with open(...) as f` handles holding it, or ''.
    With `local`, names are looked up there (a function other than the one being walked)."""
    if expr is None or depth > 3:
        return ""
    for node in subnodes(expr):
        text = const_text(node, {}) if isinstance(node, (ast.Constant, ast.BinOp)) else None
        if text and _CREDENTIAL.search(text):
            return text.strip("/~")
        if isinstance(node, ast.Name) and node.id != "self":
            held = local.get(node.id) if local is not None else (
                ctx.lookup(node.id) or ctx.loop_source(node.id))
            found = _credential_path(held, ctx, depth + 1, local) if held is not node else ""
            if found:
                return found
    return ""


class ArchivedCredentials(Check):
    """`tar.add(os.path.expanduser("~/.ssh"))`, `shutil.copy(signing_key, export_dir)`: keys
    and credential files packed into a bundle or copied next to artifacts that leave the
    machine (results uploads, model cards, exports)."""

    rules = (CRED_EXFIL,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if not node.args:
            return
        attr = last_attr(node.func)
        name = ctx.names.call_name(node)
        receiver = ast.unparse(node.func.value) if isinstance(node.func, ast.Attribute) and (
            attr in ("add", "write")) else ""  # (unparsed only for the two archive methods)
        if not (name.startswith(("shutil.copy", "shutil.copytree")) or (
                receiver and _ARCHIVE.search(receiver))):
            return
        text = _credential_path(node.args[0], ctx)
        if text and "authorized_keys" not in text:
            what = "copied out" if name.startswith("shutil.") else f"packed into {receiver}"
            ctx.report(CRED_EXFIL, node, f"credentials ({text}) are {what}: the bundle carries "
                       "the machine's keys wherever it is uploaded or shared",
                       severity=Severity.HIGH)


_ARCHIVE = re.compile(r"(?i)tar|zip|arch|bundle")


def _cached_writes(call: ast.Call, ctx: Ctx) -> list[ast.expr]:
    """`f.read()` with `with open(path, "rb") as f`: what the same function wrote to `path`
    (`with open(path, "wb") as g: g.write(blob)`), so a download cached on disk is followed."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr in ("read", "read_bytes",
                                                                         "read_text")
            and isinstance(call.func.value, ast.Name)):
        return []
    handle = ctx.lookup(call.func.value.id)
    fn = ctx.frame.node
    if call.func.attr == "read_bytes" and fn is not None:  # cache.write_bytes(raw) first
        owner = call.func.value.id
        return [n.args[0] for n in subnodes(fn) if isinstance(n, ast.Call) and n.args
                and isinstance(n.func, ast.Attribute) and n.func.attr == "write_bytes"
                and isinstance(n.func.value, ast.Name) and n.func.value.id == owner]
    if not (isinstance(handle, ast.Call) and last_attr(handle.func) == "open" and handle.args
            and fn is not None):
        return []
    path = ast.unparse(handle.args[0])
    writers = set()
    for n in subnodes(fn):
        if isinstance(n, ast.withitem) and isinstance(n.context_expr, ast.Call) and last_attr(
                n.context_expr.func) == "open" and n.context_expr.args and ast.unparse(
                n.context_expr.args[0]) == path and isinstance(n.optional_vars, ast.Name):
            mode = literal(n.context_expr.args[1]) if len(n.context_expr.args) > 1 else None
            if isinstance(mode, str) and any(c in mode for c in "wa"):
                writers.add(n.optional_vars.id)
    return [n.args[0] for n in subnodes(fn) if isinstance(n, ast.Call) and n.args
            and isinstance(n.func, ast.Attribute) and n.func.attr == "write"
            and isinstance(n.func.value, ast.Name) and n.func.value.id in writers]


def _module_from_download(call: ast.Call, ctx: Ctx) -> ast.Call | None:
    """`spec.loader.exec_module(m)` with `spec = spec_from_file_location(n, dest)` where the
    same function fetched `dest` (`urlretrieve(url, dest)`): the download that runs."""
    fn = ctx.frame.node
    if last_attr(call.func) != "exec_module" or fn is None or not call.args:
        return None
    module = call.args[0]
    if isinstance(module, ast.Name):
        module = ctx.lookup(module.id) or module
    spec = module.args[0] if isinstance(module, ast.Call) and last_attr(
        module.func) == "module_from_spec" and module.args else None
    if isinstance(spec, ast.Name):
        spec = ctx.lookup(spec.id)
    if not (isinstance(spec, ast.Call) and last_attr(spec.func) == "spec_from_file_location"
            and len(spec.args) >= 2):
        return None
    return _fetched_into([spec.args[1]], fn, ctx)


def _fetched_into(exprs: list[ast.expr], fn: ast.AST, ctx: Ctx) -> ast.Call | None:
    """The download in `fn` that writes to one of the paths `exprs` (`urlretrieve(url, dest)`,
    or `dest.write_bytes(resp.read())` in a function that opens a URL)."""
    paths = {ast.unparse(e) for e in exprs} | {ast.unparse(_unwrapped_path(e)) for e in exprs}
    calls = [n for n in subnodes(fn) if isinstance(n, ast.Call)]
    fetches = [n for n in calls if last_attr(n.func) in ("urlopen", "urlretrieve", "download")]
    handles = _handles_onto(fn, paths) if fetches else set()
    for n in calls:
        if ((ctx.names.call_name(n).startswith(("urllib.request.urlretrieve", "wget.download"))
             or last_attr(n.func) == "download_url_to_file")  # torch.hub's
                and len(n.args) >= 2 and ast.unparse(_unwrapped_path(n.args[1])) in paths):
            return n
        if (fetches and isinstance(n.func, ast.Attribute) and (
                (n.func.attr in ("write_bytes", "write_text")
                 and ast.unparse(n.func.value) in paths)
                or (n.func.attr == "write" and ast.unparse(n.func.value) in handles))):
            return fetches[0]  # (also `with open(dest, "wb") as fh: fh.write(resp.read())`)
    return None


def _handles_onto(fn: ast.AST, paths: set[str]) -> set[str]:
    """Names bound by `with open(<one of paths>, ...) as fh` in `fn`."""
    return {item.optional_vars.id for node in subnodes(fn)
            if isinstance(node, (ast.With, ast.AsyncWith)) for item in node.items
            if isinstance(item.optional_vars, ast.Name)
            and isinstance(item.context_expr, ast.Call)
            and last_attr(item.context_expr.func) == "open" and item.context_expr.args
            and ast.unparse(_unwrapped_path(item.context_expr.args[0])) in paths}


def _unwrapped_path(expr: ast.expr) -> ast.expr:
    """`str(target)`, `os.fspath(p)`, `Path(p)` -> the path expression inside."""
    while (isinstance(expr, ast.Call) and len(expr.args) == 1 and last_attr(expr.func) in (
            "str", "fspath", "Path")):
        expr = expr.args[0]
    return expr


def _spliced_input(payload: ast.expr, ctx: Ctx) -> str:
    """`eval("nn." + name + "()")`, `exec(f"x = {cfg['expr']}")`: source text around a value
    handed in (a parameter, a config entry). Generated lambdas (`eval(f"lambda {args}: ...")`)
    are code generation over names the program chose, unless a config entry is spliced in
    (`eval("lambda r: " + cfg.label_expr)`)."""
    parts = _concat_parts(payload)
    if len(parts) < 2 or not any(isinstance(literal(p), str) for p in parts):
        return ""
    first = literal(parts[0])
    fn = ctx.frame.node
    params = {a.arg for a in fn.args.args} if isinstance(
        fn, (ast.FunctionDef, ast.AsyncFunctionDef)) else set()
    if isinstance(first, str) and first.lstrip().startswith("lambda"):
        params = set()  # (generated lambdas over names the program passes: only config counts)
    for part in parts:
        if isinstance(part, ast.Name) and part.id in params:
            return part.id
        if isinstance(part, (ast.Subscript, ast.Attribute)) and re.search(
                r"(?i)^(cfg|config|conf|args|opts|options|params|hparams|spec)\b",
                ast.unparse(part)):
            return ast.unparse(part)[:30]
    return ""


def _environment_code(payload: ast.expr, ctx: Ctx, depth: int = 0) -> str:
    """`exec(compile(os.environ.get("X", "").replace(";", "\\n"), ...))`: the name of the
    environment variable whose text is the code that runs ('' if none). Followed through
    names and text-preserving calls only; a variable that merely names a URL or a path the
    code comes from is another rule's business."""
    if depth > 4:
        return ""
    if isinstance(payload, ast.Name):
        held = ctx.lookup(payload.id)
        return _environment_code(held, ctx, depth + 1) if held is not None else ""
    if isinstance(payload, ast.Subscript) and ctx.names.qualname(payload.value) == "os.environ":
        return ast.unparse(payload.slice)[:30]
    if not isinstance(payload, ast.Call):
        return ""
    name = ctx.names.call_name(payload)
    if name in ("os.environ.get", "os.getenv", "os.environ.pop") and payload.args:
        variable = literal(payload.args[0])
        default = literal(payload.args[1]) if len(payload.args) > 1 else None
        if isinstance(default, str) and re.fullmatch(
                r"\s*(True|False|None|-?\d+(\.\d*)?)\s*", default):
            return ""  # eval(os.environ.get("USE_FP16", "False")): a flag parsed badly
        return repr(variable) if isinstance(variable, str) else ast.unparse(payload.args[0])[:30]
    if isinstance(payload.func, ast.Attribute) and payload.func.attr in (
            "replace", "strip", "decode", "encode", "lstrip", "rstrip"):
        return _environment_code(payload.func.value, ctx, depth + 1)
    if payload.args and (name in ("compile", "str", "bytes", "bytes.fromhex", "zlib.decompress",
                                  "codecs.decode") or name.startswith("base64.")):
        return _environment_code(payload.args[0], ctx, depth + 1)
    return ""


def _concat_parts(expr: ast.expr) -> list[ast.expr]:
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        return _concat_parts(expr.left) + _concat_parts(expr.right)
    if isinstance(expr, ast.JoinedStr):
        return [v.value if isinstance(v, ast.FormattedValue) else v for v in expr.values]
    return [expr]


def _inline_script(call: ast.Call, name: str, ctx: Ctx) -> ast.expr | None:
    """The program text in `subprocess.run(["bash", "-c", text])` or `[sys.executable, "-c",
    text]`."""
    if not (call.args and (name.startswith("subprocess.") or _imported_spawn(call, ctx))):
        return None
    program = call.args[0]
    if isinstance(program, ast.Name):
        program = ctx.lookup(program.id) or program  # cmd = ["sh", "-c", decoded]; Popen(cmd)
    if not isinstance(program, (ast.List, ast.Tuple)):
        return None
    elts = program.elts
    for i, elt in enumerate(elts[1:-1], start=1):
        if literal(elt) == "-c" and _interpreter(elts[0], ctx):
            return elts[i + 1]
    fed = kwarg(call, "input")
    if fed is not None and elts and _interpreter(elts[0], ctx) and (
            len(elts) == 1 or literal(elts[1]) in ("-s", "-")):
        return fed  # subprocess.run(["bash", "-s", target], input=script): stdin is the program
    return None


def _imported_spawn(call: ast.Call, ctx: Ctx,
                    names: tuple[str, ...] = ("Popen", "run", "call", "check_call",
                                              "check_output")) -> bool:
    """`runner.Popen(...)` or `getattr(runner, "Popen")(...)` with `runner =
    __import__(NAME)`: a process spawn through a module imported by a computed name the call
    name cannot resolve."""
    func = call.func
    if (isinstance(func, ast.Call) and getattr_name(func) is not None
            and isinstance(func.args[0], ast.Name)):  # getattr(proc, "getstatusoutput")
        owner, attr = func.args[0], getattr_name(func)
    elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
        owner, attr = func.value, func.attr
    else:
        return False
    if attr not in names:
        return False
    held = ctx.lookup(owner.id)
    return isinstance(held, ast.Call) and last_attr(held.func) in ("__import__",
                                                                  "import_module")


def _interpreter(program: ast.expr, ctx: Ctx) -> bool:
    """`sys.executable`, "python3", "/bin/bash": a program that runs the file or text it is
    given as code."""
    name = literal(program)
    return ctx.names.qualname(program) == "sys.executable" or (
        isinstance(name, str) and _INTERPRETER.match(name.rsplit("/", 1)[-1]) is not None)


_INTERPRETER = re.compile(r"^(python[\d.]*|bash|sh|zsh)$")


def _script_paths(call: ast.Call, name: str, ctx: Ctx) -> list[ast.expr]:
    """The file `subprocess.run([sys.executable, dest])` or `runpy.run_path(dest)` runs."""
    if not call.args:
        return []
    if name == "runpy.run_path":
        return [call.args[0]]
    if name.startswith("subprocess.") and isinstance(call.args[0], (ast.List, ast.Tuple)) and (
            len(call.args[0].elts) >= 2):
        program, *rest = call.args[0].elts
        return list(rest[:2]) if _interpreter(program, ctx) else []
    return []


def _script_from_download(call: ast.Call, name: str, ctx: Ctx) -> ast.Call | None:
    """A script run as code (`_script_paths`) that the same function fetched: a download."""
    fn = ctx.frame.node
    paths = _script_paths(call, name, ctx) if fn is not None else []
    return _fetched_into(paths, fn, ctx) if paths and fn is not None else None


def _script_from_decoded(call: ast.Call, name: str, ctx: Ctx) -> ast.Call | None:
    """`f.write(base64.b64decode(_HOOK))` into a temporary file, then `runpy.run_path(f.name)`:
    decoded data run as a script (the write the same function made)."""
    fn = ctx.frame.node
    paths = _script_paths(call, name, ctx) if fn is not None else []
    if not paths or fn is None:
        return None
    wanted = {ast.unparse(_unwrapped_path(e)) for e in paths}
    handles = {w[:-len(".name")] for w in wanted if w.endswith(".name")}  # tmp.name -> tmp
    handles |= _handles_onto(fn, wanted)  # with open(dest, "wb") as fh: fh.write(...)
    for node in subnodes(fn):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("write", "write_bytes", "write_text") and node.args):
            continue
        owner = ast.unparse(_unwrapped_path(node.func.value))
        if (owner in handles or owner in wanted) and any(
                isinstance(n, ast.Call) and ctx.names.call_name(n).startswith(_DECODERS)
                for n in ctx.walk_values(node.args[0])):
            return node
    return None


def _sends_in(name: str, ctx: Ctx) -> list[ast.Call]:
    """The network sends inside local function `name`."""
    fns = ctx.defs.get(name, [])
    if len(fns) != 1:
        return []
    return [n for n in subnodes(fns[0]) if isinstance(n, ast.Call)
            and _sent_values(n, ctx, depth=1)][:1]


def _params_reaching(name: str, ctx: Ctx,
                     sinks: Callable[[ast.Call], list[ast.expr]], kind: str) -> set[int]:
    """Positions of the parameters of local function `name` that reach the values `sinks`
    picks out of its calls (directly or through a local variable); cached per function."""
    fns = ctx.defs.get(name, [])
    if len(fns) != 1:
        return set()
    key = (id(fns[0]), kind)
    cached = _REACHING.get(key)
    if cached is not None and cached[0] is fns[0]:
        return cached[1]
    result = _reaching(fns[0], sinks)
    _REACHING[key] = (fns[0], result)
    if len(_REACHING) > 4096:
        _REACHING.clear()
    return result


_REACHING: dict[tuple[int, str], tuple[ast.AST, set[int]]] = {}
"""(The node is kept with its result: ids of freed trees are reused.)"""


def _reaching(fn: ast.FunctionDef | ast.AsyncFunctionDef,
              sinks: Callable[[ast.Call], list[ast.expr]]) -> set[int]:
    fns = [fn]
    params = [a.arg for a in fns[0].args.args]
    local = bound_values(fns[0])
    reached: set[str] = set()
    for node in subnodes(fns[0]):
        if isinstance(node, ast.Call):
            for value in sinks(node):
                todo = [value]  # through locals: body = json.dumps(p); req = Request(data=body)
                while todo and len(reached) < 64:
                    names = {n.id for n in subnodes(todo.pop()) if isinstance(n, ast.Name)}
                    todo.extend(local[n] for n in names - reached if n in local)
                    reached |= names
    return {i for i, p in enumerate(params) if p in reached}


def _helper_sends(name: str, ctx: Ctx) -> set[int]:
    """Positions of the parameters a local function passes to a network send."""
    return _params_reaching(name, ctx, lambda call: _sent_values(call, ctx, depth=1), "send")


def _sent_values(call: ast.Call, ctx: Ctx, depth: int = 0) -> list[ast.expr]:
    """The arguments of a call that sends data out ([] for any other call)."""
    name = ctx.names.call_name(call)
    func = last_attr(call.func)
    values = [*call.args, *(kw.value for kw in call.keywords)]
    receiver = call.func.value if isinstance(call.func, ast.Attribute) else None
    if name.startswith(_SENDS) or (func in _SEND_METHODS and receiver is not None
                                   and _CLIENT.search(last_attr(receiver) or "")):
        if name.startswith("urllib.request.Request"):
            return []  # judged where it is sent (urlopen(req))
        if func in ("send_message", "sendmail") and ctx.frame.node is not None:
            mails = {ast.unparse(v) for v in values}  # msg.set_content(body) before the send
            bodies: list[ast.expr] = [  # (attachments: judged at add_attachment)
                a for n in subnodes(ctx.frame.node) if isinstance(n, ast.Call)
                and isinstance(n.func, ast.Attribute) and n.func.attr in (
                    "set_content", "set_payload") and ast.unparse(n.func.value) in mails
                for a in n.args]
            return [*values, *bodies]
        return values
    if func == "update" and isinstance(receiver, ast.Attribute) and receiver.attr == "headers":
        return values  # session.headers.update({...}): sent with every request
    if func == "open" and isinstance(receiver, ast.Name) and isinstance(
            opener := ctx.lookup(receiver.id), ast.Call) and last_attr(
                opener.func) == "build_opener":
        return values  # _opener = urllib.request.build_opener(...); _opener.open(req)
    root = root_name(receiver) if receiver is not None and ctx.mentions("ServerProxy") else ""
    held = ctx.lookup(root) if root else None  # (the gate keeps lookups off every call)
    if isinstance(held, ast.Call) and ctx.names.call_name(held).startswith(
            ("xmlrpc.client.ServerProxy", "xmlrpclib.ServerProxy")):
        return values  # proxy.runs.submit(meta): every method call is a remote call
    if _http_wrapper(call):
        return values[1:]  # self._request("POST", path, json={...}): a project's HTTP wrapper
    if isinstance(call.func, ast.Name) and depth == 0:
        sent = _helper_sends(call.func.id, ctx)
        if sent:  # `_post("/api/runs", meta)`: a local helper that sends its argument
            return [a for i, a in enumerate(call.args) if i in sent]
    if (depth == 0 and isinstance(receiver, ast.Name) and receiver.id == "self"
            and len(fns := ctx.defs.get(func, [])) == 1 and fns[0].args.args
            and fns[0].args.args[0].arg == "self"):
        sent = _helper_sends(func, ctx)  # self._post(payload): a method that sends its argument
        if sent:
            return [a for i, a in enumerate(call.args) if i + 1 in sent]
    if name.startswith(_TRACKERS) or func in _TRACKER_METHODS:
        # wandb.init(config={..., "env": dict(os.environ)}): the run page is shared and
        # stored on a third-party server
        return [kw.value for kw in call.keywords if kw.arg == "config"] if func in (
            "init", "init_trackers") else values
    if name.startswith("subprocess.") or name in ("os.system", "os.popen"):
        first = call.args[0] if call.args else None
        words = first.elts if isinstance(first, (ast.List, ast.Tuple)) else []
        head = literal(words[0]) if words else None
        if isinstance(head, str) and _CURL.match(head):
            return list(words[1:])
    return []


def _credential_helper(first: ast.expr) -> bool:
    """`subprocess.run(["git", "credential", "fill"], ...)`, or the same as one string."""
    words: list[object] = []
    if isinstance(first, (ast.List, ast.Tuple)):
        words = [literal(e) for e in first.elts[:3]]
    elif isinstance(text := literal(first), str):
        words = list(text.split()[:3])
    else:
        return False
    return words[:2] == ["git", "credential"] and len(words) == 3 and words[2] in (
        "fill", "get")


class _Sources:
    """Walks values back to where they come from, recording what secrets they carry."""

    def __init__(self, ctx: Ctx) -> None:
        self.ctx = ctx
        self.env = False
        self.creds = ""
        self.via = ""
        self.downloads: list[ast.Call] = []
        self.env_node: ast.AST | None = None
        self.creds_node: ast.AST | None = None
        self.creds_reads: list[ast.AST] = []
        self.helper_calls: list[ast.Call] = []
        self._seen: set[int] = set()

    def scan(self, expr: ast.AST, depth: int, local: dict[str, ast.expr] | None = None) -> None:
        if depth > _MAX_DEPTH or id(expr) in self._seen:
            return
        self._seen.add(id(expr))
        for node in _walk_values_not_replies(expr, self.ctx):
            if self._source(node):
                return
            if isinstance(node, ast.Name):
                value = (local or {}).get(node.id)
                # every value the name took: `line = _fetch_line()` or, on error, a literal
                found = [value] if value is not None else self.ctx.values_of(node.id)
                last = self.ctx.lookup(node.id)
                for bound in found or ([last] if last is not None else []):
                    self.scan(bound, depth + 1, local)
                if not found and last is None and local is None:
                    held = self.ctx.resolve(node)  # a parameter: what its callers pass
                    if held is not None and held is not node:
                        self.scan(held, depth + 1)
                source = self.ctx.loop_source(node.id) if local is None else None
                if source is not None:  # for hook in spec["post_download"]: ...
                    self.scan(source, depth + 1, local)
                if local is None and self.ctx.frame.node is not None:
                    for part in mutations(self.ctx.frame.node, {node.id}):
                        self.scan(part, depth + 1)
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "self"):
                value = self.ctx.self_attrs.get(node.attr)
                if value is not None:
                    self.scan(value, depth + 1)
            elif isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
                for written in _cached_writes(node, self.ctx):
                    self.scan(written, depth + 1)  # download -> cache file -> read -> exec
                self._helper(node, depth)

    def _helper(self, call: ast.Call, depth: int) -> None:
        """`payload = _profile()` / `self._profile()`: what a local helper returns."""
        func = call.func
        if isinstance(func, ast.Attribute) and not (
                isinstance(func.value, ast.Name) and func.value.id == "self"):
            return
        fns = self.ctx.defs.get(last_attr(func), [])
        if len(fns) != 1:
            return
        fn = fns[0]
        local = bound_values(fn)  # also `with urlopen(u) as r`
        before = (self.env, self.creds)
        fetched = len(self.downloads)
        returned: set[str] = set()
        for node in subnodes(fn):
            if isinstance(node, ast.Return) and node.value is not None:
                self.scan(node.value, depth + 1, local)
                returned |= {n.id for n in subnodes(node.value) if isinstance(n, ast.Name)}
        for value in mutations(fn, returned):
            self.scan(value, depth + 1, local)
        if not self.creds:  # for name in (".netrc", ".aws/credentials"): (home / name).read_text()
            found = _credential_read_in(fn, self.ctx)
            if found is not None:
                self.creds, self.creds_node = found
        if (self.env, self.creds) != before and not self.via:
            self.via = f" (built by {fn.name}(), line {fn.lineno})"
        if len(self.downloads) > fetched:
            self.helper_calls.append(call)  # `blob = _fetch(url)`: where the download is used

    def _prefix_filtered(self, comp: ast.AST) -> None:
        """`{k: v for k, v in os.environ.items() if k.startswith(("SLURM_", "NCCL_"))}`: job
        metadata, not secrets, unless a prefix names a credential namespace (AWS_, HF_...)."""
        if not isinstance(comp, (ast.DictComp, ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            return
        for gen in comp.generators:
            env = [n for n in subnodes(gen.iter) if isinstance(n, ast.Attribute)
                   and self.ctx.names.qualname(n) == "os.environ"]
            if not env or not gen.ifs or any(
                    (isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not)) or isinstance(
                        n, ast.NotIn) for test in gen.ifs for n in subnodes(test)):
                continue  # `if not k.startswith("_")`: everything but a few
            words: list[str] = []
            for test in gen.ifs:
                for n in subnodes(test):
                    value = self.ctx.const(n) if isinstance(n, ast.Name) else literal(n)
                    items = value if isinstance(value, (tuple, list)) else (value,)
                    words.extend(v for v in items if isinstance(v, str))
            if words and not any(_SECRET_PREFIX.search(w) for w in words):
                for node in env:
                    _mark_single(node)

    def _source(self, node: ast.AST) -> bool:
        self._prefix_filtered(node)
        if isinstance(node, ast.Call) and _is_download(node, self.ctx):
            self.downloads.append(node)
        if isinstance(node, ast.Attribute) and self.ctx.names.qualname(node) == "os.environ":
            parent_ok = getattr(node, "_mlscan_single", False)
            if not parent_ok:
                self.env = True
                self.env_node = self.env_node or node
                return True
        # One variable (`os.environ["HF_TOKEN"]` in an auth header) is how API clients log in;
        # secrets sent in bodies are the semgrep rule's job. Only the whole environment counts.
        if isinstance(node, ast.Subscript) and self.ctx.names.qualname(node.value) == "os.environ":
            _mark_single(node.value)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and last_attr(
                node.func) in ("get", "setdefault", "pop", "__contains__", "__getitem__"):
            _mark_single(node.func.value)
        if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn))
                                                 for op in node.ops):
            for side in node.comparators:  # `v in os.environ`: a membership test
                _mark_single(side)
        if (not self.creds and isinstance(node, ast.Call) and not node.args
                and last_attr(node.func) in ("read_text", "read_bytes")
                and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)):
            held = self.ctx.lookup(node.func.value.id)  # signer.read_text(), signer a key path
            text = next((v for n in subnodes(held) if isinstance(v := literal(n), str)
                         and _CREDENTIAL.search(v)), "") if held is not None else ""
            if text:
                self.creds, self.creds_node = text.strip("/~"), node
        if (not self.creds and isinstance(node, ast.Call) and node.args
                and last_attr(node.func) in ("open", "read_text", "read_bytes", "Path")):
            path = node.args[0]  # open(netrc).read() with netrc = expanduser("~/.netrc")
            if isinstance(path, ast.Name):
                path = self.ctx.lookup(path.id) or path
            text = next((v for n in subnodes(path) if isinstance(v := literal(n), str)
                         and _CREDENTIAL.search(v)), "")
            if text:
                self.creds, self.creds_node = text.strip("/~"), node  # reported at the read
        if (isinstance(node, ast.Call) and last_attr(node.func) == "read"
                and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                and _credential_path(self.ctx.lookup(node.func.value.id), self.ctx)):
            self.creds_reads.append(node)  # `with open(key) as f:` ... `f.read()`: both lines
        value = literal(node)
        if isinstance(value, str) and _CREDENTIAL.search(value):
            self.creds = self.creds or value.strip("/~")
            self.creds_node = self.creds_node or node
        return False


_DOWNLOADS = ("urllib.request.urlopen", "urllib.request.urlretrieve", "requests.get",
              "requests.post", "httpx.get", "urllib3.", "aiohttp.")


def _walk_values_not_replies(expr: ast.AST, ctx: Ctx) -> list[ast.AST]:
    """`ast.walk` that does not enter the arguments of a network call: the reply of
    `requests.post(url, json=dict(os.environ))` is not the environment it sent."""
    out: list[ast.AST] = []
    todo = [expr]
    while todo:
        node = todo.pop()
        out.append(node)
        name = ctx.names.call_name(node) if isinstance(node, ast.Call) else ""
        if isinstance(node, ast.Call) and not name.startswith("urllib.request.Request") and (
                _is_download(node, ctx) or name.startswith(_SENDS) or _http_wrapper(node)):
            todo.append(node.func)
            continue
        if isinstance(node, ast.Call) and name.startswith(("subprocess.", "os.spawn")):
            # subprocess.run(cmd, env=env).stdout: the child's output is not its environment
            todo.extend([node.func, *node.args, *(k for k in node.keywords if k.arg != "env")])
            continue
        todo.extend(child_nodes(node))
    return out


def _http_wrapper(call: ast.Call) -> bool:
    """`self._request("POST", path, json=...)`: a call naming an HTTP verb that sends data."""
    return bool(call.args) and literal(call.args[0]) in ("POST", "PUT", "PATCH") and bool(
        re.search(r"(?i)request|send|call|http|fetch|api", last_attr(call.func)))


def _is_download(call: ast.Call, ctx: Ctx) -> bool:
    name = ctx.names.call_name(call)
    return name.startswith(_DOWNLOADS) or (
        last_attr(call.func) == "get" and isinstance(call.func, ast.Attribute)
        and _CLIENT.search(last_attr(call.func.value) or "") is not None)


_PROCESS = ("subprocess.", "os.system", "os.popen", "os.exec", "os.spawn")
_PIPED = re.compile(r"\b(curl|wget)\b[^|;&]*(\|\s*(sudo\s+)?((ba|z|da)?sh|python[0-9.]*)\b|"
                    r"(&&|;)\s*(sudo\s+)?((ba|z|da)?sh\s+\S|\./))")


def _built_function(call: ast.Call, ctx: Ctx) -> ast.Call | None:
    """`shim = types.FunctionType(compile(text, ...), {})` ... `shim()`: the call of a
    function made from a code object (the semgrep rule reports where it is made)."""
    if isinstance(call.func, ast.Call):
        made: ast.AST | None = call.func  # types.FunctionType(code, {...})(model): made and run
    elif not isinstance(call.func, ast.Name) or call.func.id not in ctx.code_functions:
        return None
    else:
        made = ctx.lookup(call.func.id)
    if not (isinstance(made, ast.Call) and made.args
            and ctx.names.call_name(made) in ("types.FunctionType", "types.LambdaType")):
        return None
    code = made.args[0]  # (FunctionType(f.__code__, ...) copies a function: not hidden)
    if isinstance(code, ast.Attribute) and code.attr == "__code__":
        return None
    # only code compiled, unmarshalled or decoded here (a framework rebuilding a function from
    # a code object it traced is not hiding anything)
    for node in ctx.walk_values(code):
        if isinstance(node, ast.Attribute) and node.attr == "co_consts":
            return made
        if isinstance(node, ast.Call) and (ctx.names.call_name(node) in (
                "compile", "builtins.compile", "marshal.loads", "types.CodeType")
                or ctx.names.call_name(node).startswith(_DECODERS)):
            return made
    return None


def _decoded_command(command: ast.expr, ctx: Ctx) -> str:
    """The decoder (`base64.b64decode`) a shell command comes from, also through `self.x`."""
    held = ctx.value_of(command) if isinstance(command, ast.Attribute) else None
    for node in ctx.walk_values(held if held is not None else command):
        if isinstance(node, ast.Call) and (name := ctx.names.call_name(node)).startswith(
                _DECODERS):
            return name.split("(")[0]  # (base64.b64decode(x).decode names the decoder)
    return ""


def _report_decoded_program(call: ast.Call, name: str, program: ast.expr, ctx: Ctx) -> None:
    """A shell command or `-c` program text that comes from a decoder: MLS401 at the run."""
    decoder = _decoded_command(program, ctx)
    if decoder:
        ctx.report(DECODED_EXEC, call, f"{name or last_attr(call.func)}() runs a shell or "
                   f"Python program that {decoder} decodes: the code that runs is hidden from "
                   "review")


_ARTIFACT = re.compile(r"(?i)^(ckpt|checkpoint|state|state_dict|sd|meta|metadata|payload|"
                       r"blob|bundle|archive|manifest|record|entry|row|sample|item|hub_info)$")


def _stored_in_artifact(payload: ast.expr, ctx: Ctx) -> str:
    """`exec(compile(src, ...))` with `src = ckpt.get("migration")`: code kept inside a
    checkpoint, dataset record or downloaded bundle (not a config file the user edits); also
    `for src in ckpt.get("extra", {}).get("modules", []): exec(src)`."""
    values = ctx.walk_values(payload)
    read = {n.id for n in values if isinstance(n, ast.Name)}
    for loop in ctx.loops:
        if isinstance(loop, ast.For) and any(
                isinstance(n, ast.Name) and n.id in read for n in ast.walk(loop.target)):
            values.extend(ctx.walk_values(loop.iter))
    for node in values:
        holder = None
        if isinstance(node, ast.Subscript) and isinstance(literal(node.slice), str):
            holder = node.value
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "get" and node.args and isinstance(literal(node.args[0]),
                                                                         str)):
            holder = node.func.value
        if isinstance(holder, (ast.Name, ast.Attribute)) and _ARTIFACT.match(last_attr(holder)):
            return ast.unparse(holder)[:30]
    return ""


_SHELL_RUNS = frozenset({"os.system", "os.popen", "subprocess.getoutput",
                         "subprocess.getstatusoutput"})
_REMOTE_RUNNER = re.compile(r"(?i)(^|_)(ssh|run_remote|remote|exec_command|run_command|"
                            r"run_cmd|sh|shell|pdsh|clush|srun_cmd|on_nodes?|all_nodes)(_|$)")
_KEY_APPEND = re.compile(r">>\s*\S*authorized_keys|tee\s+-a\s+\S*authorized_keys")


def _key_appended(call: ast.Call) -> ast.AST | None:
    """`self._ssh(host, f"echo {KEY} >> ~/.ssh/authorized_keys")`: a key appended on the
    target machine through a shell command (the piece of the command that appends)."""
    for value in [*call.args, *(k.value for k in call.keywords)]:
        parts = [n for n in subnodes(value) if isinstance(n, ast.Constant)
                 and isinstance(n.value, str)]
        if _KEY_APPEND.search(" ".join(str(p.value) for p in parts)):
            return next((p for p in reversed(parts) if "authorized_keys" in str(p.value)),
                        call)
    return None


def _shell_argv(call: ast.Call) -> bool:
    """`hook(["sh", "-c", "..."])`: an argv that runs a shell command, whatever the callee is
    called (a runner fetched through a table or a decoded name)."""
    argv = call.args[0] if call.args else None
    return (isinstance(argv, (ast.List, ast.Tuple)) and len(argv.elts) >= 3
            and literal(argv.elts[1]) == "-c" and isinstance(shell := literal(argv.elts[0]), str)
            and re.fullmatch(r"(/usr)?(/bin/)?(ba|z|da)?sh", shell) is not None)


def _piped_download(call: ast.Call, ctx: Ctx) -> bool:
    """`runner.Popen(["sh", "-c", "curl -fsSL https://x/y.sh | sh"])` where `runner` is
    subprocess under another name (semgrep matches the spelled-out module only)."""
    for value in [*call.args, *(k.value for k in call.keywords)]:
        for node in ctx.walk_values(value):
            text = _string_text(node) if isinstance(node, ast.expr) else ""
            if text and _PIPED.search(text):  # (also f"curl -fsSL {URL} | bash")
                return True
    return False


_PRELOAD_KEYS = frozenset({"LD_PRELOAD", "LD_AUDIT", "DYLD_INSERT_LIBRARIES", "PYTHONSTARTUP",
                           "LD_LIBRARY_PATH"})
_START_FILES = re.compile(r"\.pth$|sitecustomize|usercustomize")


_EXEC = ("exec", "eval", "compile", "builtins.exec", "builtins.eval", "builtins.compile",
         "types.FunctionType", "types.LambdaType")
_UNPICKLE = ("pickle.loads", "cloudpickle.loads", "dill.loads", "_pickle.loads",
             "joblib.loads")
_DECODERS = ("base64.", "zlib.decompress", "codecs.decode", "bz2.decompress", "lzma.decompress",
             "bytes.fromhex", "bytearray.fromhex", "gzip.decompress",
             "marshal.loads", "binascii.")


_INTERPRETERS = frozenset({"ctypes.pythonapi.PyRun_SimpleString",
                           "code.InteractiveInterpreter().runsource",
                           "code.InteractiveInterpreter().runcode",
                           "code.InteractiveConsole().runsource", "code.InteractiveConsole().push"})
_SCHEDULERS = frozenset({"register", "Thread", "Timer", "Process", "submit", "apply_async",
                         "call_soon", "run_in_executor", "partial"})


def _exec_by_another_door(node: ast.Call, name: str, ctx: Ctx) -> str:
    """Python source run without a call named exec: the interpreter's C API or the `code`
    module (`ctypes.pythonapi.PyRun_SimpleString(blob)`), or exec handed on as a callable
    (`atexit.register(exec, payload)`, `threading.Thread(target=exec, args=(payload,))`)."""
    if name in _INTERPRETERS and node.args and not isinstance(node.args[0], ast.Constant):
        return (f"{name}() runs Python source through the interpreter's own API: an exec "
                "under a name no reader searches for")
    if last_attr(node.func) not in _SCHEDULERS:
        return ""
    runs = [a for a in (*node.args, *(k.value for k in node.keywords if k.arg == "target"))
            if isinstance(a, (ast.Name, ast.Attribute))
            and ctx.names.qualname(a) in ("exec", "eval", "builtins.exec", "builtins.eval")]
    if not runs:
        return ""
    payloads = [a for a in node.args if a is not runs[0]] + [
        e for k in node.keywords if k.arg == "args" and isinstance(k.value, (ast.Tuple, ast.List))
        for e in k.value.elts[:1]]
    if not payloads or all(isinstance(p, ast.Constant) for p in payloads):
        return ""
    return (f"{ast.unparse(runs[0])} handed to {last_attr(node.func)}() as the function to "
            f"run, with {ast.unparse(payloads[0])[:40]} as its source: code runs later, "
            "under no exec call")


class DownloadExecute(Check):
    """Downloaded bytes that reach exec/eval/compile or a start-up hook file: reported on
    the download (where reviewers see a URL) as well as the semgrep rule's sink line. Also
    decoded data run by an exec the semgrep rules cannot name (`_apply = getattr(builtins,
    bytes((101, 120, 101, 99)).decode())`)."""

    rules = (DOWNLOAD_EXEC, DECODED_EXEC, BUILTIN_LOOKUP, PRELOAD, HIDDEN_IMPORT, CODE_OBJECT,
             AUTHORIZED_KEYS)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        name = ctx.names.call_name(node)
        runner = _exec_by_another_door(node, name, ctx)
        if runner:
            ctx.report(DECODED_EXEC, node, runner)
        if (name in ("types.FunctionType", "types.LambdaType") and node.args
                and not isinstance(node.args[0], ast.Attribute) and ctx.frame.node is not None
                and any(isinstance(n, ast.Call) and ctx.names.call_name(n) == "marshal.loads"
                        for n in ctx.walk_values(node.args[0]))):
            # return types.FunctionType(marshal.loads(blob), {...}): a function made from
            # unmarshalled bytes, handed to whoever calls this
            ctx.report(CODE_OBJECT, node, f"{name}() builds a function from unmarshalled bytes: "
                       "the code it runs has no source to review")
        built = _built_function(node, ctx)
        if built is not None:
            shown = last_attr(node.func) or f"{last_attr(built.func)}(...)"
            ctx.report(CODE_OBJECT, node, f"{shown}() runs a function built from "
                       f"a code object on line {built.lineno}, not from source: what runs here "
                       "has no source to review")
        if (name in ("__import__", "builtins.__import__", "importlib.import_module")
                and node.args and getattr(node.args[0], "folded", False)):
            # (also where semgrep's taint stops: code after `try: ...; return`)
            ctx.report(HIDDEN_IMPORT, node, f"imports {literal(node.args[0])!r} by a name "
                       "assembled at run time (chr codes, joined or decoded pieces): the "
                       "dependency is hidden from readers and scanners")
        fetched = _module_from_download(node, ctx)
        if fetched is not None:
            ctx.report(DOWNLOAD_EXEC, node, "exec_module() runs a Python file downloaded on line "
                       f"{fetched.lineno}: code from the network runs")
            ctx.report(DOWNLOAD_EXEC, fetched, "the file downloaded here is imported and run "
                       f"(exec_module on line {node.lineno}): code from the network runs")
            return
        script = _script_from_download(node, name, ctx)
        if script is not None:
            ctx.report(DOWNLOAD_EXEC, node, f"{name}() runs a script downloaded on line "
                       f"{script.lineno}: code from the network runs")
            return
        script = _script_from_decoded(node, name, ctx)
        if script is not None:
            ctx.report(DECODED_EXEC, node, f"{name}() runs a file written on line "
                       f"{script.lineno} from decoded data (base64/zlib/hex): the code that "
                       "runs is hidden from review")
            return
        hidden = isinstance(node.func, ast.Name) and node.func.id in ctx.hidden_names
        remote = _REMOTE_RUNNER.search(last_attr(node.func)) is not None and not (
            name.startswith(_PROCESS))
        if (remote or _shell_argv(node)) and _piped_download(node, ctx):
            ctx.report(DOWNLOAD_EXEC, node, f"{last_attr(node.func)}() runs a command that "
                       "pipes a download (curl/wget) into a shell on the target machine: code "
                       "from the network runs there")
        elif remote and (appended := _key_appended(node)) is not None:
            ctx.report(AUTHORIZED_KEYS, appended, f"{last_attr(node.func)}() runs a command "
                       "that appends a key to ~/.ssh/authorized_keys: whoever holds the key "
                       "can log in")
        if (name.startswith(_PROCESS) or hidden) and _piped_download(node, ctx):
            ctx.report(DOWNLOAD_EXEC, node, f"{name or last_attr(node.func)}() runs a shell "
                       "command that pipes a download (curl/wget) into a shell or "
                       "interpreter: code from the network runs")
        payload: ast.expr | None = None
        if name in _UNPICKLE and node.args:  # cloudpickle.loads(_fetch(url)): code from the net
            payload = node.args[0]
        elif node.args and (name in _SHELL_RUNS or literal(kwarg(node, "shell")) is True
                            or _imported_spawn(node, ctx, ("getoutput", "getstatusoutput",
                                                           "system", "popen"))):
            # runner.Popen(reply["post_publish"], shell=True), also self._runner.check_output
            # with `_runner = __import__(...)` (any callee handed shell=True runs a shell)
            payload = node.args[0]
            _report_decoded_program(node, name, payload, ctx)
        elif (inline := _inline_script(node, name, ctx)) is not None:
            payload = inline  # subprocess.run(["bash", "-c", script])
            _report_decoded_program(node, name, inline, ctx)
        elif name in _EXEC and node.args:
            payload = node.args[0]
            if (isinstance(node.func, ast.Name) and node.func.id not in _EXEC
                    and name.startswith("builtins.") and node.func.id in ctx.hidden_names
                    and not (node.func.id in ctx.defs and ctx.lookup(node.func.id) is None)):
                # (a local alias in another function does not rename a module-level def)
                ctx.report(BUILTIN_LOOKUP, node, f"{node.func.id}() is {name}() fetched by a "
                           "computed name: code runs here under a name no reader searches for")
            elif (isinstance(node.func, ast.Name) and name in ("builtins.eval", "builtins.exec")
                  and isinstance(ctx.frame.node, (ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.func.id in param_names(ctx.frame.node)):
                ctx.report(BUILTIN_LOOKUP, node, f"{node.func.id}() is {name}() passed in as a "
                           "parameter's default: code runs here under a name no reader "
                           "searches for", severity=Severity.MEDIUM)
            if isinstance(node.func, ast.Name) and node.func.id not in _EXEC and any(
                    isinstance(n, ast.Call) and ctx.names.call_name(n).startswith(_DECODERS)
                    for n in ctx.walk_values(payload)):
                ctx.report(DECODED_EXEC, node, f"{node.func.id}() is {name}() under another "
                           "name, running decoded data")
            elif name in ("exec", "eval", "builtins.exec", "builtins.eval"):
                decoder = _decoding_helper(payload, ctx)
                if decoder:  # exec(compile(_profile_source(), ...)): the decode is one call away
                    ctx.report(DECODED_EXEC, node, f"{name}() runs what {decoder}() decodes "
                               "(base64/zlib/marshal): the code that runs is hidden from review")
                elif (variable := _environment_code(payload, ctx)):
                    ctx.report(DECODED_EXEC, node, f"{name}() runs code read from the "
                               f"environment variable {variable}: whoever sets it in the "
                               "job's environment decides what code runs",
                               severity=Severity.MEDIUM)
                elif (spliced := _spliced_input(payload, ctx)):
                    ctx.report(DECODED_EXEC, node, f"{name}() runs source text with {spliced} "
                               "spliced in: whoever sets that value decides what code runs",
                               severity=Severity.MEDIUM)
                elif (isinstance(payload, ast.Attribute) and isinstance(payload.value, ast.Name)
                      and payload.value.id == "self"
                      and isinstance(held := ctx.self_attrs.get(payload.attr), ast.Call)
                      and any(isinstance(n, ast.Call)
                              and ctx.names.call_name(n).startswith(_DECODERS)
                              for n in ctx.walk_values(held))):
                    ctx.report(DECODED_EXEC, node, f"{name}() runs self.{payload.attr}, code "
                               f"compiled from decoded data on line {held.lineno}: the code "
                               "that runs is hidden from review")
                elif (stored := _stored_in_artifact(payload, ctx)):
                    ctx.report(DECODED_EXEC, node, f"{name}() runs source text stored in "
                               f"{stored}: whoever writes that file decides what code runs "
                               "when it is loaded", severity=Severity.HIGH)
        elif (last_attr(node.func) in ("write", "writelines", "write_text", "write_bytes")
              and node.args and isinstance(node.func, ast.Attribute)
              and _start_file(node.func.value, ctx)):
            payload = node.args[0]
            self._exec_line(payload, ctx)
        via_helper = False
        if payload is None and isinstance(node.func, ast.Name):
            runs = _helper_runs(node.func.id, ctx)  # _apply_manifest_hooks(manifest)
            payload = next((a for i, a in enumerate(node.args) if i in runs), None)
            via_helper = payload is not None
        if payload is None:
            return
        found = _Sources(ctx)
        found.scan(payload, 0)
        if via_helper:
            how = f"{last_attr(node.func)}(), which runs it with exec"
        elif name in _UNPICKLE:
            how = f"{name}() (unpickling runs code)"
        elif name in _EXEC:
            how = f"{name}()"
        elif name.startswith(("subprocess.", "os.")):
            how = f"the shell ({name})"
        else:
            how = "a start-up hook file or site-packages module"
        # A download inside a shared helper (`_get(url)`) is reported where the helper is
        # called for the data that runs, not in the helper every other caller uses too.
        if found.helper_calls and found.downloads:
            helper, inner = found.helper_calls[0], found.downloads[0]
            ctx.defer(lambda: ctx.report(
                DOWNLOAD_EXEC, inner, f"data downloaded here reaches {how} on line "
                f"{node.lineno}: code from the network runs") if ctx.call_sites.get(
                    last_attr(helper.func), 0) <= 1 else None)  # a helper called once
        for download in found.helper_calls[:1] or found.downloads[:1]:
            ctx.report(DOWNLOAD_EXEC, download, f"data downloaded here reaches {how} on line "
                       f"{node.lineno}: code from the network runs")
            if getattr(download, "lineno", node.lineno) != node.lineno:
                ctx.report(DOWNLOAD_EXEC, node, f"{how} runs data downloaded on line "
                           f"{download.lineno}: code from the network runs")


    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        """`env["LD_PRELOAD"] = ensure_kernels()` where the helper downloads the library (or
        the path was just filled by `urlretrieve`): native code from the network is loaded
        into every child process."""
        if not any(isinstance(t, ast.Subscript) and literal(t.slice) in _PRELOAD_KEYS
                   for t in node.targets):
            return
        source = "\n".join(ctx.lines[node.lineno - 1:(node.end_lineno or node.lineno)])
        hidden = next((t.slice for t in node.targets if isinstance(t, ast.Subscript) and (
            getattr(t.slice, "folded", False) or str(literal(t.slice)) not in source)), None)
        # ("LD_" "PRELOAD": implicit concatenation spells the key so that no search finds it)
        if hidden is not None and literal(hidden) != "LD_LIBRARY_PATH":
            ctx.report(PRELOAD, node, f"sets {literal(hidden)} through a computed name (the "
                       "key is assembled so that no search finds it): every child process "
                       "loads the named library or script first")
        downloads: list[ast.Call] = []
        for value in ctx.walk_values(node.value):
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                fns = ctx.defs.get(value.func.id, [])
                if len(fns) == 1:
                    downloads += [n for n in subnodes(fns[0]) if isinstance(n, ast.Call)
                                  and _is_download(n, ctx)]
        for download in downloads[:1]:
            ctx.report(DOWNLOAD_EXEC, download, f"the file downloaded here is preloaded into "
                       f"child processes ({literal(node.targets[0].slice)} on line "  # type: ignore[attr-defined]
                       f"{node.lineno}): native code from the network runs")

    def _exec_line(self, payload: ast.expr, ctx: Ctx) -> None:
        """`f"import base64,zlib;exec(zlib.decompress(...{blob}...))"` returned by a helper
        and written into a .pth file: the exec runs at every interpreter start."""
        values: list[ast.AST] = list(ctx.walk_values(payload))
        values += [v for n in list(values) if isinstance(n, ast.Name)
                   for v in ctx.values_of(n.id) if v is not None]
        for call in [n for n in values if isinstance(n, ast.Call)]:
            fns = ctx.defs.get(last_attr(call.func), []) if isinstance(call.func, ast.Name) else []
            if len(fns) == 1:
                values += [r.value for r in subnodes(fns[0])
                           if isinstance(r, ast.Return) and r.value is not None]
        for node in values:
            parts = [node] if isinstance(node, ast.Constant) else (
                node.values if isinstance(node, ast.JoinedStr) else [])
            text = "".join(str(p.value) for p in parts if isinstance(p, ast.Constant))
            if re.search(r"\bexec\(|\beval\(", text) and re.search(
                    r"b64decode|decompress|fromhex|marshal", text):
                ctx.report(DECODED_EXEC, node, "a line that execs decoded data is written into "
                           "a start-up hook file: it runs at every interpreter start")
                return


def _credential_read_in(fn: ast.AST, ctx: Ctx) -> tuple[str, ast.Call] | None:
    """A read in `fn` whose path is a credential file, followed through the function's own
    names and loop variables (`for name in (".netrc", ...): p = Path.home() / name;
    p.read_text()`): the helper is not the frame being walked, so its names are not ctx's."""
    local: dict[str, ast.expr] = {**bound_values(fn), **{
        n.target.id: n.iter for n in subnodes(fn)
        if isinstance(n, ast.For) and isinstance(n.target, ast.Name)}}
    for call in subnodes(fn):
        if not (isinstance(call, ast.Call) and last_attr(call.func) in (
                "read_text", "read_bytes", "open")):
            continue
        mode = literal(arg(call, 1, "mode")) if last_attr(call.func) == "open" else "r"
        if isinstance(mode, str) and any(c in mode for c in "wax"):
            continue  # open(authorized_keys, "a"): a write, reported as what it is
        path = call.args[0] if call.args else (
            call.func.value if isinstance(call.func, ast.Attribute) else None)
        found = _credential_path(path, ctx, local=local)
        if found:
            return found, call
    return None


def _decoding_helper(payload: ast.expr, ctx: Ctx) -> str:
    """The local function, called in `payload`, that returns decoded data (a decoder call
    in its body), else ''."""
    for node in ctx.walk_values(payload):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            fns = ctx.defs.get(node.func.id, [])
            if len(fns) == 1 and any(isinstance(r, ast.Return) and r.value is not None
                                     for r in subnodes(fns[0])) and any(
                    isinstance(n, ast.Call) and ctx.names.call_name(n).startswith(_DECODERS)
                    and "encode" not in ctx.names.call_name(n) for n in subnodes(fns[0])):
                return node.func.id
    return ""


def _helper_runs(name: str, ctx: Ctx) -> set[int]:
    """Positions of the parameters a local function passes (decoded or not) to exec/eval."""
    return _params_reaching(name, ctx, lambda call: call.args[:1] if (
        ctx.names.call_name(call) in _EXEC) else [], "exec")


def _start_file(handle: ast.expr, ctx: Ctx) -> bool:
    """`f` from `with open(os.path.join(site_dir, "x.pth"), "w") as f`, or a `.py` module
    written into site-packages (`sysconfig.get_paths()["purelib"]`): code every later
    interpreter runs or imports."""
    value = ctx.lookup(handle.id) if isinstance(handle, ast.Name) else None
    if value is None:
        return False
    nodes = ctx.walk_values(value)
    if any(isinstance(literal(n), str) and _START_FILES.search(str(literal(n))) for n in nodes):
        return True
    site = any((isinstance(n, ast.Call) and ctx.names.call_name(n).startswith((
        "sysconfig.get_path", "site.getsitepackages", "site.getusersitepackages")))
        or (isinstance(literal(n), str) and "site-packages" in str(literal(n))) for n in nodes)
    return site and any(isinstance(literal(n), str) and str(literal(n)).endswith(".py")
                        for n in nodes)


def mutations(fn: ast.AST, names: set[str]) -> list[ast.expr]:
    """Values put into `names` after they were built: `d.update(x)`, `d[k] = x`, `l.append(x)`."""
    out: list[ast.expr] = []
    if not names:
        return out
    for node in subnodes(fn):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id in names
                and node.func.attr in ("update", "append", "extend", "setdefault", "insert")):
            out.extend(node.args)
            out.extend(kw.value for kw in node.keywords)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name)
                and t.value.id in names for t in node.targets):
            out.append(node.value)
    return out


def _mark_single(node: ast.AST) -> None:
    """`os.environ["X"]` / `os.environ.get("X")` read one variable, not the whole environment."""
    node._mlscan_single = True  # type: ignore[attr-defined]


_TOKEN_GETTERS = frozenset({"get_token", "huggingface_hub.get_token",
                            "huggingface_hub.HfFolder.get_token", "HfFolder.get_token",
                            "wandb.api.api_key"})
_DUMPS = frozenset({"json.dump", "yaml.dump", "yaml.safe_dump", "torch.save", "pickle.dump",
                    "json.dumps", "yaml.safe_dump_all", "toml.dump"})


def _secret_value(value: ast.expr, ctx: Ctx) -> str:
    """`get_token()`, `os.environ["HF_TOKEN"]`, `os.getenv("WANDB_API_KEY")`: a credential."""
    if not isinstance(value, (ast.Call, ast.Subscript)):
        return ""
    if isinstance(value, ast.Call):
        name = ctx.names.call_name(value)
        if name in _TOKEN_GETTERS or last_attr(value.func) == "get_token":
            return f"{ast.unparse(value)[:40]}"
        key = literal(value.args[0]) if name in ("os.getenv", "os.environ.get") and (
            value.args) else None
    else:
        key = literal(value.slice) if ctx.names.qualname(value.value) == "os.environ" else None
    if isinstance(key, str) and re.search(r"(?i)token|secret|api_?key|password|passwd", key):
        return key
    return ""


class CredentialInArtifact(Check):
    """`card = {..., "hub_auth": get_token()}` and then `json.dump(card, fh)`: a credential
    written into a run file (a model card, a config, a checkpoint) that is shared or pushed
    with the weights. The sends are `_sent_values`'; this is the file half."""

    rules = (CRED_EXFIL,)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        if ctx.names.call_name(node) not in _DUMPS or not node.args:
            return
        payload = node.args[0]
        held = ctx.lookup(payload.id) if isinstance(payload, ast.Name) else payload
        if not isinstance(held, ast.Dict):
            return
        for key, value in zip(held.keys, held.values, strict=True):
            secret = _secret_value(value, ctx) if value is not None else ""
            if secret and key is not None:
                ctx.report(CRED_EXFIL, value, f"the credential {secret} is stored under "
                           f"{ast.unparse(key)} in data written by {ctx.names.call_name(node)}(): "
                           "whoever gets the file (a pushed model card, a shared checkpoint) "
                           "gets the credential", severity=Severity.MEDIUM)


def _string_text(expr: ast.expr) -> str:
    """The literal text of a string or f-string (placeholders as `URL`)."""
    if isinstance(expr, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str)
                       else "URL" for v in expr.values)
    text = literal(expr)
    return text if isinstance(text, str) else ""


class PipedDownloadScript(Check):
    """`script = f"cd {dir} && curl -fsSL {URL} | bash -s -- ..."` handed to a helper (an SSH
    runner, a job submitter): the shell that finally runs it is out of sight, the download
    piped into a shell is not. Reported on the source line that holds the `curl`."""

    rules = (DOWNLOAD_EXEC,)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        text = _string_text(node.value)
        if not text or not _PIPED.search(text):
            return
        line = next((i for i in range(node.lineno, (node.end_lineno or node.lineno) + 1)
                     if i <= len(ctx.lines) and re.search(r"\b(curl|wget)\b", ctx.lines[i - 1])),
                    node.lineno)
        where = ast.copy_location(ast.Constant(None), node.value)
        where.lineno, where.end_lineno = line, line
        ctx.report(DOWNLOAD_EXEC, where, "a shell command that pipes a download straight into "
                   "a shell, kept to be run elsewhere: code from the network runs unchecked",
                   severity=Severity.HIGH)


def _sshd_forwarded(call: ast.Call) -> str:
    """`subprocess.Popen(["ssh", ..., "-R", "10022:localhost:22", host])`: the -R spec whose
    local end is port 22."""
    argv = call.args[0] if call.args else None
    words = [literal(e) for e in argv.elts] if isinstance(argv, (ast.List, ast.Tuple)) else []
    if not (words and isinstance(words[0], str) and re.match(
            r"^(\S*/)?(ssh|autossh)$", words[0])):
        return ""
    for flag, spec in itertools.pairwise(words):
        if flag == "-R" and isinstance(spec, str) and re.search(
                r":(localhost|127\.0\.0\.1|0\.0\.0\.0)?:?22$", spec):
            return spec
    return ""
