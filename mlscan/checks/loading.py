"""MLS1xx: code that deserializes untrusted data or runs code fetched from a hub."""

from __future__ import annotations

import ast
import re

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import DATA, HOOK, Ctx, Where
from mlscan.checks.names import arg, imported_module, is_true, kwarg, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.origin import DOWNLOAD, LITERAL, VARIABLE, origin, phrase, severity_for
from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

_TORCH_REFS = ("https://pytorch.org/docs/stable/generated/torch.load.html",
               "https://cwe.mitre.org/data/definitions/502.html")
_SEVERITY_NOTE = ("Severity follows where the data comes from: critical for a download or "
                  "network data, medium for a path of unknown origin, low for a literal path.")

TORCH_LOAD_UNSAFE = register(Rule(
    code="MLS101", name="torch-load-weights-only-false", severity=Severity.MEDIUM,
    confidence=Confidence.HIGH, cwe=502,
    summary="torch.load with weights_only=False (or a custom pickle_module) runs pickled code.",
    doc=RuleDoc(
        what="Flags `torch.load(..., weights_only=False)`, a non-literal `weights_only`, a "
        "`pickle_module=` argument, and `torch.hub.load_state_dict_from_url(weights_only=False)`."
        " " + _SEVERITY_NOTE,
        why="With weights_only=False torch.load is pickle.load: a checkpoint can run any code "
        "while it loads (reverse shells, credential theft, 'sleepy pickle' weight edits).",
        example="state = torch.load(args.resume, weights_only=False)",
        use_instead="torch.load(path, weights_only=True); store extra objects as plain data, "
        "or allowlist them with torch.serialization.add_safe_globals.",
        references=_TORCH_REFS)))

TORCH_LOAD_DEFAULT = register(Rule(
    code="MLS102", name="torch-load-implicit-weights-only", severity=Severity.LOW,
    confidence=Confidence.MEDIUM, cwe=502,
    summary="torch.load without weights_only: safe only on torch>=2.6.",
    doc=RuleDoc(
        what="Flags `torch.load(...)` calls that do not pass `weights_only`. Low severity; "
        "medium when the same file loads safely elsewhere (weights_only=True, safetensors: "
        "this one load was left open), inside hooks or data loading, or behind a trigger; "
        "high for downloaded files.",
        why="torch>=2.6 defaults to weights_only=True, but the same code run on an older torch "
        "(or with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD set) unpickles arbitrary objects.",
        example="ckpt = torch.load(ckpt_path, map_location='cpu')",
        use_instead="Say it: torch.load(ckpt_path, map_location='cpu', weights_only=True).",
        references=_TORCH_REFS)))

PICKLE_LOAD = register(Rule(
    code="MLS103", name="pickle-family-load", severity=Severity.MEDIUM,
    confidence=Confidence.HIGH, cwe=502,
    summary="pickle/dill/cloudpickle/joblib/pandas pickle loading executes code in the data.",
    doc=RuleDoc(
        what="Flags `pickle.load(s)`, `pickle.Unpickler`, `_pickle`, `dill`, `cloudpickle`, "
        "`joblib.load`, `pandas.read_pickle` and `shelve.open`. " + _SEVERITY_NOTE,
        why="Unpickling calls any callable the data names; loading a swapped or downloaded "
        "file runs the attacker's code with the trainer's privileges.",
        example="meta = pickle.load(open(path, 'rb'))",
        use_instead="JSON, numpy .npy without pickles, safetensors, or skops for estimators.",
        references=("https://docs.python.org/3/library/pickle.html",))))

NUMPY_PICKLE = register(Rule(
    code="MLS104", name="numpy-load-allow-pickle", severity=Severity.MEDIUM,
    confidence=Confidence.HIGH, cwe=502,
    summary="np.load(..., allow_pickle=True) unpickles object arrays.",
    doc=RuleDoc(
        what="Flags numpy.load with allow_pickle=True (or a non-literal value). "
        + _SEVERITY_NOTE,
        why="Object arrays in .npy/.npz files are pickles; allow_pickle=True runs them.",
        example="arr = np.load('feats.npy', allow_pickle=True)",
        use_instead="Save plain numeric arrays and load with the default allow_pickle=False.",
        references=("https://numpy.org/doc/stable/reference/generated/numpy.load.html",))))

YAML_UNSAFE = register(Rule(
    code="MLS105", name="yaml-unsafe-load", severity=Severity.HIGH,
    confidence=Confidence.HIGH, cwe=502,
    summary="yaml.load with an unsafe loader can construct arbitrary Python objects.",
    doc=RuleDoc(
        what="Flags `yaml.load` with `Loader`/`UnsafeLoader`/`CLoader` (high), without a "
        "loader (medium) or with FullLoader (low), and `yaml.unsafe_load` (high).",
        why="PyYAML's unsafe loaders build any object the document names "
        "(`!!python/object/apply:os.system`), so a config file becomes code.",
        example="cfg = yaml.load(open('cfg.yaml'), Loader=yaml.Loader)",
        use_instead="yaml.safe_load(...) or Loader=yaml.SafeLoader.",
        references=("https://pyyaml.org/wiki/PyYAMLDocumentation",))))

TRUST_REMOTE_CODE = register(Rule(
    code="MLS106", name="trust-remote-code", severity=Severity.HIGH,
    confidence=Confidence.HIGH, cwe=494,
    summary="trust_remote_code=True runs Python code from the model repository.",
    doc=RuleDoc(
        what="Flags calls passing `trust_remote_code=True` (from_pretrained, pipeline, "
        "load_dataset...). Low when `revision=` pins a full commit hash or the value is a "
        "variable passed through from the caller.",
        why="The repo's modeling files (config.json auto_map) are imported and run; an unpinned "
        "repo can change that code at any time.",
        example="AutoModel.from_pretrained('org/model', trust_remote_code=True)",
        use_instead="Use a natively supported architecture, or pin revision='<40-hex commit>' "
        "after reviewing the code.",
        references=("https://huggingface.co/docs/transformers/custom_models",))))

HUB_UNPINNED = register(Rule(
    code="MLS107", name="hub-download-unpinned", severity=Severity.LOW,
    confidence=Confidence.MEDIUM, cwe=494,
    summary="Hugging Face Hub download without a pinned revision.",
    doc=RuleDoc(
        what="Flags hf_hub_download/snapshot_download/cached_download without `revision=`.",
        why="The files behind a branch name can be replaced; a pinned commit cannot.",
        example="hf_hub_download('org/model', 'model.pt')",
        use_instead="hf_hub_download('org/model', 'model.pt', revision='<40-hex commit>')",
        references=("https://huggingface.co/docs/huggingface_hub/guides/download",))))

TORCH_HUB = register(Rule(
    code="MLS108", name="torch-hub-load-unpinned", severity=Severity.HIGH,
    confidence=Confidence.HIGH, cwe=494,
    summary="torch.hub.load runs hubconf.py from a GitHub repo that is not pinned to a commit.",
    doc=RuleDoc(
        what="Flags torch.hub.load/list/help of a GitHub repo: high without a ref, low with a "
        "tag or branch (a release tag is how most code pins, though tags can move) or a "
        "commit hash.",
        why="torch.hub imports the repo's hubconf.py: whoever controls the default branch "
        "controls your process.",
        example="torch.hub.load('someone/models', 'resnet50')",
        use_instead="Vendor the model code, or pin 'owner/repo:<commit>' and review it.",
        references=("https://pytorch.org/docs/stable/hub.html",))))

KERAS_UNSAFE = register(Rule(
    code="MLS109", name="keras-unsafe-deserialization", severity=Severity.HIGH,
    confidence=Confidence.HIGH, cwe=502,
    summary="Keras safe mode switched off (Lambda layers can run code on load).",
    doc=RuleDoc(
        what="Flags `keras.config.enable_unsafe_deserialization()` and `safe_mode=False` in "
        "Keras loading calls.",
        why="Lambda layers carry marshalled Python bytecode; safe mode is what refuses it.",
        example="keras.models.load_model('m.keras', safe_mode=False)",
        use_instead="Keep safe_mode on; rebuild Lambda layers as registered custom layers.",
        references=("https://keras.io/api/models/model_saving_apis/model_saving_and_loading/",)
    )))

_PICKLE_MODULES = ("pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib",
                   "sklearn.externals.joblib", "pickle5")
_PICKLE_FUNCS = frozenset({"load", "loads", "Unpickler"})
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_MOVING_BRANCHES = frozenset({"main", "master", "dev", "develop", "head", "trunk", "nightly",
                              "latest"})
"""Branch names that follow new pushes: a ref like these pins nothing."""
_HUB_DOWNLOADS = frozenset({"hf_hub_download", "snapshot_download", "cached_download"})


_DECODERS = ("base64.", "zlib.decompress", "bz2.decompress", "lzma.decompress", "binascii.",
             "codecs.decode", "gzip.decompress")


def _decoded_blob(data: ast.AST | None, ctx: Ctx) -> bool:
    """`zlib.decompress(base64.b64decode(_BLOB))`: bytes decoded from a constant in the file."""
    return data is not None and any(
        isinstance(n, ast.Call) and (ctx.names.call_name(n).startswith(_DECODERS)
                                     or last_attr(n.func) == "fromhex")
        for n in ctx.walk_values(data))


def _open_unpickler(cls: ast.ClassDef, ctx: Ctx) -> str:
    """`class _Index(pickle.Unpickler)` whose `find_class` (if any) never refuses a name: the
    base it loads with ('' for a restricted unpickler or any other class)."""
    base = next((b for b in (ctx.names.qualname(b) or "" for b in cls.bases)
                 if b.endswith(".Unpickler") and _is_pickle_load(b)), "")
    if base and any(isinstance(n, ast.Raise) for n in subnodes(cls)):
        return ""  # find_class raises UnpicklingError for what is not allowed
    return base


def _known_dicts(value: ast.expr, ctx: Ctx) -> bool:
    """`kwargs` bound to dict literals only (`{"model_dir": d} if remote else {}`) that do not
    set weights_only: the keys `**kwargs` adds are all known."""
    held = ctx.lookup(value.id) if isinstance(value, ast.Name) else None
    options = [held.body, held.orelse] if isinstance(held, ast.IfExp) else [held]
    return all(isinstance(o, ast.Dict) and None not in o.keys and all(
        literal(k) != "weights_only" for k in o.keys) for o in options)


def _is_pickle_load(name: str) -> bool:
    module, _, func = name.rpartition(".")
    if func in _PICKLE_FUNCS and module in _PICKLE_MODULES:
        return True
    return name in ("pandas.read_pickle", "shelve.open") or name.endswith(
        "ForkingPickler.loads")  # multiprocessing.reduction.ForkingPickler is pickle


def _round_trip(call: ast.Call, data: ast.expr | None, ctx: Ctx) -> bool:
    """`joblib.dump(pre, tmp)` earlier in the same function, then `joblib.load(tmp)`: the file
    this code has just written is read back to verify it (nothing else wrote it in between)."""
    fn = ctx.frame.node
    if fn is None or not isinstance(data, (ast.Name, ast.Attribute)):
        return False
    path = ast.unparse(data)
    return any(isinstance(n, ast.Call) and last_attr(n.func) == "dump" and len(n.args) >= 2
               and ast.unparse(n.args[1]) == path and n.lineno < call.lineno
               for n in subnodes(fn))


def _write_only_shelf(call: ast.Call, ctx: Ctx) -> bool:
    """`with shelve.open(p) as db: db[key] = results`: a shelf only written to unpickles
    nothing (reads do)."""
    scope = ctx.frame.node
    if scope is None:
        return False
    for stmt in subnodes(scope):
        if not isinstance(stmt, ast.With) or not any(
                item.context_expr is call for item in stmt.items):
            continue
        held = {item.optional_vars.id for item in stmt.items
                if item.context_expr is call and isinstance(item.optional_vars, ast.Name)}
        uses = [n for s in stmt.body for n in subnodes(s)
                if isinstance(n, ast.Name) and n.id in held]
        stores = [n for s in stmt.body for n in subnodes(s) if isinstance(n, ast.Subscript)
                  and isinstance(n.ctx, ast.Store) and isinstance(n.value, ast.Name)
                  and n.value.id in held]
        return bool(held) and len(uses) == len(stores)
    return False


def _table_of(entry: ast.expr, ctx: Ctx) -> ast.Dict | None:
    """The dict literal an entry is read from: `TABLE[key]` or `TABLE.get(key, ...)`."""
    if isinstance(entry, ast.Subscript):
        table = ctx.resolve(entry.value)
    elif (isinstance(entry, ast.Call) and isinstance(entry.func, ast.Attribute)
          and entry.func.attr == "get"):
        table = ctx.resolve(entry.func.value)
    else:
        return None
    return table if isinstance(table, ast.Dict) else None


def _table_unpickler(func: ast.expr, ctx: Ctx) -> str:
    """`_codec[kind](raw)` with `_codec = {"pkl": pickle.loads, "json": json.loads}` (also
    `decode = _codec.get(suffix, ...)` then `decode(raw)`)."""
    if not any(ctx.mentions(word) for word in ("pickle", "dill", "joblib", "shelve")):
        return ""  # (no unpickler can be in a table)
    if isinstance(func, ast.Name):
        bound = ctx.lookup(func.id)
        func = bound if isinstance(bound, (ast.Subscript, ast.Call)) else func
    table = _table_of(func, ctx)
    if table is None:
        return ""
    for value in table.values:
        qual = ctx.names.qualname(value) if isinstance(value, (ast.Attribute, ast.Name,
                                                               ast.Call)) else None
        if qual and _is_pickle_load(qual):
            return qual
    return ""


def _module_table_unpickler(call: ast.Call, ctx: Ctx) -> str:
    """`_CODECS[fmt].load(fh)` with `_CODECS = {"json": json, "pkl": import_module("pickle")}`:
    a table of modules, one of them an unpickler, picked by a key at run time."""
    func = call.func
    if not (isinstance(func, ast.Attribute) and func.attr in ("load", "loads")):
        return ""
    table = _table_of(func.value, ctx)
    if table is None:
        return ""
    for value in table.values:
        module = ctx.names.aliases.get(value.id, value.id) if isinstance(value, ast.Name) else (
            imported_module(value, ctx.names) if value is not None else "")
        if module and _is_pickle_load(f"{module}.{func.attr}"):
            return f"{module}.{func.attr}"
    return ""



def _open_listener(call: ast.Call, ctx: Ctx) -> str:
    """`conn.recv()` with `conn = listener.accept()` and `listener =
    multiprocessing.connection.Listener(addr)` (no authkey): the Listener's name, else ''."""
    conn = call.func.value if isinstance(call.func, ast.Attribute) else None
    accepted = ctx.lookup(conn.id) if isinstance(conn, ast.Name) else None
    if not (isinstance(accepted, ast.Call) and last_attr(accepted.func) == "accept"
            and isinstance(accepted.func, ast.Attribute)
            and isinstance(accepted.func.value, ast.Name)):
        return ""
    made = ctx.lookup(accepted.func.value.id)
    if (isinstance(made, ast.Call) and ctx.names.call_name(made).endswith("connection.Listener")
            and kwarg(made, "authkey") is None and len(made.args) < 3):
        return ast.unparse(made.func)
    return ""

class UnsafeLoading(Check):
    rules = (TORCH_LOAD_UNSAFE, TORCH_LOAD_DEFAULT, PICKLE_LOAD, NUMPY_PICKLE, YAML_UNSAFE,
             TRUST_REMOTE_CODE, HUB_UNPINNED, TORCH_HUB, KERAS_UNSAFE)

    def __init__(self) -> None:
        self._safe_seen = [False]

    def visit_Module(self, node: ast.Module, ctx: Ctx) -> None:
        self._safe_seen = [False]  # one flag per file, read by deferred decisions

    def visit_Dict(self, node: ast.Dict, ctx: Ctx) -> None:
        """`{"json": json.loads, "pyd": pickle.loads}`: a decoder table with an unpickler in
        it; whatever file or shard carries that key runs code when it is decoded."""
        if not any(ctx.mentions(word) for word in ("pickle", "dill", "joblib")):
            return
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None or not isinstance(name := literal(key), str) or not isinstance(
                    value, (ast.Attribute, ast.Name)):
                continue
            qual = ctx.names.qualname(value)
            if qual and _is_pickle_load(qual):
                ctx.report(PICKLE_LOAD, value, f"{qual} registered as the {name!r} decoder: any "
                           "file or shard with that key runs code when it is decoded",
                           severity=Severity.MEDIUM)
                return

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        name = ctx.names.call_name(node)
        func = last_attr(node.func)
        if isinstance(node.func, ast.Name) and node.func.id in ctx.class_defs:
            name = _open_unpickler(ctx.class_defs[node.func.id], ctx) or name
        if name.startswith("safetensors.") or is_true(kwarg(node, "weights_only")) or (
                func == "setdefault" and len(node.args) == 2
                and literal(node.args[0]) == "weights_only" and is_true(node.args[1])):
            self._safe_seen[0] = True  # also kwargs.setdefault("weights_only", True)
        if func == "recv" and not node.args and (listener := _open_listener(node, ctx)):
            ctx.report(PICKLE_LOAD, node, f"recv() on a connection from {listener} without an "
                       "authkey: it unpickles whatever any client sends, and unpickling runs "
                       "code", severity=Severity.HIGH)
        if name in ("torch.load", "torch.serialization.load"):
            self._torch_load(node, ctx, name)
        elif name.endswith("load_state_dict_from_url") and literal(
                kwarg(node, "weights_only")) is False:
            ctx.report(TORCH_LOAD_UNSAFE, node, f"{name}(weights_only=False) unpickles a "
                       "downloaded checkpoint", severity=Severity.CRITICAL)
        elif func in ("load", "loads") and (picked := _module_table_unpickler(node, ctx)):
            ctx.report(PICKLE_LOAD, node, f"{ast.unparse(node.func)[:40]}() picks its module "
                       f"from a table that holds {picked}: unpickling runs any code the data "
                       "names", severity=Severity.MEDIUM)
        elif isinstance(node.func, (ast.Subscript, ast.Name)) and _table_unpickler(node.func, ctx):
            ctx.report(PICKLE_LOAD, node, f"{ast.unparse(node.func)[:40]}() picks its loader "
                       f"from a table that holds {_table_unpickler(node.func, ctx)}: unpickling "
                       "runs any code the data names", severity=Severity.MEDIUM)
        elif _is_pickle_load(name) and not (name == "shelve.open" and _write_only_shelf(node, ctx)):
            data = arg(node, 0, "file")
            if _round_trip(node, data, ctx):
                return  # joblib.dump(obj, tmp); check = joblib.load(tmp): its own file, read back
            src = origin(data, ctx)
            if src == LITERAL and _decoded_blob(data, ctx):
                ctx.report(PICKLE_LOAD, node, f"{name}() deserializes an encoded blob embedded "
                           "in the code (base64/zlib/hex): a hidden pickle payload runs on load",
                           severity=Severity.HIGH)
                return
            ctx.report(PICKLE_LOAD, node, f"{name}() deserializes {phrase(src)}; unpickling "
                       "runs any code the data names", severity=severity_for(
                           src, literal=Severity.LOW, variable=Severity.MEDIUM))
        elif name in ("numpy.load", "numpy.lib.npyio.load", "numpy.lib.format.read_array"):
            allow = arg(node, 1 if name.endswith("read_array") else 2,
                        "allow_pickle")  # np.load(f, None, True): positional
            if isinstance(allow, ast.Name) and isinstance(held := ctx.resolve(allow), ast.Constant):
                allow = held
            if allow is not None and literal(allow) is not False:
                src = origin(arg(node, 0, "file"), ctx)
                ctx.report(NUMPY_PICKLE, node, f"np.load(allow_pickle=True) of {phrase(src)} "
                           "unpickles object arrays", severity=severity_for(
                               src, literal=Severity.LOW, variable=Severity.MEDIUM))
        elif name in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.unsafe_load_all"):
            self._yaml(node, ctx, name)
        elif name in ("torch.hub.load", "torch.hub.list", "torch.hub.help"):
            self._torch_hub(node, ctx, name)
        elif literal(kwarg(node, "trust_repo")) is True and not name.startswith(
                "torch.hub") and func != "dict":  # (dict(trust_repo=True): the call is judged)
            # fetch = getattr(getattr(torch, "hub"), "load"); fetch(repo, m, trust_repo=True)
            ctx.report(TORCH_HUB, node, f"{ast.unparse(node.func)[:30]}(..., trust_repo=True) "
                       "loads a hub repo and runs its hubconf.py without asking",
                       severity=Severity.MEDIUM)
        elif func == "enable_unsafe_deserialization":
            ctx.report(KERAS_UNSAFE, node, "Keras unsafe deserialization enabled: Lambda layers "
                       "in loaded models can run code")
        elif literal(kwarg(node, "safe_mode")) is False:
            ctx.report(KERAS_UNSAFE, node, f"{func}(safe_mode=False) lets Lambda layers run code")
        if func in _HUB_DOWNLOADS and kwarg(node, "revision") is None:
            ctx.report(HUB_UNPINNED, node, f"{func}() without revision=: the files can change "
                       "under you")
        trust = kwarg(node, "trust_remote_code")
        if trust is None:  # from_pretrained(name, **opts) with opts = {"trust_remote_code": ...}
            for kw in node.keywords:
                held = ctx.lookup(kw.value.id) if kw.arg is None and isinstance(
                    kw.value, ast.Name) else None
                if isinstance(held, ast.Dict):
                    trust = kwarg(ast.Call(func=node.func, args=[], keywords=[
                        ast.keyword(arg=None, value=held)]), "trust_remote_code")
        if trust is not None and literal(trust) is not False:
            self._trust(node, ctx, trust, func)

    def _torch_load(self, node: ast.Call, ctx: Ctx, name: str) -> None:
        weights_only = kwarg(node, "weights_only")
        if isinstance(weights_only, (ast.Name, ast.Subscript, ast.Attribute)):
            held = ctx.resolve(weights_only)  # weights_only=_STRICT, a module constant
            # (weights_only=cfg.strict: the config field's declared default)
            if isinstance(held, (ast.Constant, ast.Compare, ast.Call)):
                weights_only = held
        src = origin(arg(node, 0, "f"), ctx)
        if kwarg(node, "pickle_module") is not None:
            ctx.report(TORCH_LOAD_UNSAFE, node, f"{name}(pickle_module=...) with a custom "
                       f"unpickler on {phrase(src)}", severity=severity_for(
                           src, literal=Severity.MEDIUM, variable=Severity.HIGH))
        elif weights_only is None:
            if any(kw.arg is None and not _known_dicts(kw.value, ctx) for kw in node.keywords):
                return  # torch.load(f, **kwargs): the caller's kwargs decide (often safely)
            if src == DOWNLOAD:
                ctx.report(TORCH_LOAD_DEFAULT, node, f"{name}() without weights_only on "
                           f"{phrase(src)}: unsafe on torch<2.6", severity=Severity.HIGH)
                return
            where = ctx.where()
            if src == VARIABLE and _fetched_here(arg(node, 0, "f"), where, ctx):
                ctx.report(TORCH_LOAD_DEFAULT, node, f"{name}() without weights_only on a file "
                           "this function downloads: unsafe on torch<2.6",
                           severity=Severity.MEDIUM)
                return
            safe = self._safe_seen
            ctx.defer(lambda: self._implicit(node, ctx, name, src, where, safe))
        elif literal(weights_only) is False:
            ctx.report(TORCH_LOAD_UNSAFE, node, f"{name}(weights_only=False) on {phrase(src)}: "
                       "the checkpoint can run code while loading", severity=severity_for(
                           src, literal=Severity.LOW, variable=Severity.MEDIUM))
        elif isinstance(weights_only, ast.Compare) and any(
                isinstance(n, ast.Attribute) and n.attr in ("__version__", "version")
                for n in subnodes(weights_only)):
            ctx.report(TORCH_LOAD_UNSAFE, node, f"{name}(weights_only=<version test>) on "
                       f"{phrase(src)}: a version comparison decides whether the checkpoint "
                       "can run code (string comparisons of versions are easy to get wrong)",
                       severity=Severity.MEDIUM)  # weights_only=torch.__version__ < "2"
        elif _env_default_false(weights_only, ctx) or _default_false(weights_only):
            ctx.report(TORCH_LOAD_UNSAFE, node, f"{name}() with weights_only False unless an "
                       f"environment variable or setting turns it on, on {phrase(src)}: unsafe "
                       "by default",
                       severity=Severity.MEDIUM)
        elif not is_true(weights_only):  # passed through: the caller decides
            ctx.report(TORCH_LOAD_UNSAFE, node, f"{name}(weights_only=<variable>) on "
                       f"{phrase(src)}: unsafe when a caller passes False", severity=(
                           Severity.HIGH if src == DOWNLOAD else Severity.LOW))

    def _implicit(self, node: ast.Call, ctx: Ctx, name: str, src: str, where: Where,
                  safe: list[bool]) -> None:
        """Low on its own (torch>=2.6 defaults to weights_only=True); medium where the same
        file loads safely elsewhere (this one path was left out, or a branch reopens the
        hole), or where it runs inside a hook, a data loader or behind a trigger."""
        why = ""
        if safe[0]:
            why = "; other loads in this file are safe (weights_only=True or safetensors)"
        elif ctx.trigger_kinds(where) & triggers.STRONG:
            why = "; it runs only under a trigger condition"
        elif any(role in (HOOK, DATA) for role, _ in ctx.roles(where)):
            why = "; it runs inside a hook or data loading"
        ctx.report(TORCH_LOAD_DEFAULT, node, f"{name}() without weights_only on {phrase(src)}: "
                   f"unsafe on torch<2.6{why}",
                   severity=Severity.MEDIUM if why else Severity.LOW)

    def _yaml(self, node: ast.Call, ctx: Ctx, name: str) -> None:
        if "unsafe" in name:
            ctx.report(YAML_UNSAFE, node, f"{name}() constructs arbitrary Python objects")
            return
        loader = arg(node, 1, "Loader")
        if loader is None:
            ctx.report(YAML_UNSAFE, node, f"{name}() without a Loader (unsafe on PyYAML<5.1)",
                       severity=Severity.MEDIUM)
            return
        loader_name = last_attr(loader)
        if loader_name in ("SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"):
            return
        if loader_name in ("FullLoader", "CFullLoader"):
            ctx.report(YAML_UNSAFE, node, f"{name}(Loader=FullLoader): prefer SafeLoader",
                       severity=Severity.LOW)
            return
        ctx.report(YAML_UNSAFE, node, f"{name}(Loader={loader_name or '...'}) can construct "
                   "arbitrary Python objects")

    def _torch_hub(self, node: ast.Call, ctx: Ctx, name: str) -> None:
        source = literal(kwarg(node, "source"))
        if source == "local":
            return
        repo_arg = arg(node, 0, "repo_or_dir" if name.endswith("load") else "github")
        repo = ctx.const(repo_arg)  # also a module constant HUB_REPO = "owner/repo:tag"
        head = repo_arg.values[0] if isinstance(repo_arg, ast.JoinedStr) and (
            repo_arg.values) else None
        prefix = literal(head) if head is not None else None
        if isinstance(prefix, str) and "/" in prefix and prefix.endswith(":"):
            ctx.report(TORCH_HUB, node, f"{name}({prefix}<ref>) runs hubconf.py from GitHub at a "
                       "ref chosen at run time (pin a commit)", severity=Severity.LOW)
            return
        if not isinstance(repo, str):
            ctx.report(TORCH_HUB, node, f"{name}() of a repo chosen at run time runs its "
                       "hubconf.py")
            return
        _, _, ref = repo.partition(":")
        if _HEX40.match(ref):
            sev, how = Severity.LOW, "pinned to a commit (review it)"
        elif ref.lower() in _MOVING_BRANCHES:
            sev, how = Severity.HIGH, f"at branch {ref!r} (whatever is pushed there next runs)"
        elif ref:
            sev, how = Severity.LOW, f"at tag or branch {ref!r} (tags can move; pin a commit)"
        else:
            sev, how = Severity.HIGH, "at its default branch"
        ctx.report(TORCH_HUB, node, f"{name}({repo!r}) runs hubconf.py from GitHub {how}",
                   severity=sev)

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        """`kw["trust_remote_code"] = True` (also a key spelled `"_".join(...)` and a
        `getattr(args, "x", True)` default): keyword options built as a table first."""
        target = node.targets[0] if len(node.targets) == 1 else None
        if not (isinstance(target, ast.Subscript)
                and literal(target.slice) == "trust_remote_code"):
            return
        trust = node.value
        if is_true(trust) or ctx.const(trust) is True:
            sev = Severity.HIGH
        elif (isinstance(trust, ast.Call) and last_attr(trust.func) in ("get", "getattr")
              and len(trust.args) >= 2 and is_true(trust.args[-1])):
            sev = Severity.MEDIUM
        else:
            return  # a caller's own flag passed through
        ctx.report(TRUST_REMOTE_CODE, node, f"{ast.unparse(target.value)[:30]}"
                   "[\"trust_remote_code\"] switched on: the loader it is passed to imports "
                   "and runs Python files from the model repo", severity=sev)

    def visit_AnnAssign(self, node: ast.AnnAssign, ctx: Ctx) -> None:
        """`trust_remote_code: bool = True` in a config class: every load that takes its
        options from the config runs the repo's code unless a user turns it off."""
        if (ctx.frame.node is None and ctx.classes and isinstance(node.target, ast.Name)
                and node.target.id == "trust_remote_code" and node.value is not None
                and is_true(node.value)):
            ctx.report(TRUST_REMOTE_CODE, node, f"config field trust_remote_code defaults to "
                       f"True in {ctx.classes[-1].name}: every loader given these options "
                       "imports and runs Python files from the model repo",
                       severity=Severity.MEDIUM)

    def _trust(self, node: ast.Call, ctx: Ctx, trust: ast.expr, func: str) -> None:
        revision = literal(kwarg(node, "revision"))
        pinned = isinstance(revision, str) and bool(_HEX40.match(revision))
        if pinned:
            sev = Severity.LOW
        elif is_true(trust) or ctx.const(trust) is True:  # trust_remote_code: bool = True
            sev = Severity.HIGH
        elif (isinstance(trust, ast.Call) and last_attr(trust.func) in ("get", "getattr")
              and len(trust.args) >= 2 and is_true(trust.args[-1])):
            sev = Severity.MEDIUM  # overrides.get("trust_remote_code", True): on unless refused
        elif isinstance(trust, ast.UnaryOp) and isinstance(trust.op, ast.Not):
            sev = Severity.MEDIUM  # not cfg.offline: on unless a flag turns it off
        elif isinstance(trust, ast.Compare) and any(
                isinstance(op, (ast.NotIn, ast.NotEq)) for op in trust.ops):
            sev = Severity.MEDIUM  # name not in _NATIVE: on for every model not listed
        else:  # passed through from the caller's own flag
            sev = Severity.LOW
        explicit = any(k.value is trust for k in node.keywords) and (
            node.lineno < getattr(trust, "lineno", 0) <= (node.end_lineno or 0))
        # A call spread over lines is reported where `trust_remote_code=True` is written.
        ctx.report(TRUST_REMOTE_CODE, trust if explicit else node, f"{func or 'call'}"
                   "(trust_remote_code=...) imports "
                   "and runs Python files from the model repo"
                   + ("" if pinned else " (revision not pinned to a commit)"), severity=sev)


_FETCH_TO_FILE = frozenset({"urlretrieve", "download_url_to_file", "download_url", "download",
                            "hf_hub_download", "snapshot_download", "cached_download",
                            "cached_path", "get_file"})


def _fetched_here(path: ast.expr | None, where: Where, ctx: Ctx) -> bool:
    """`urlretrieve(source, local); ...; torch.load(local)`: the loaded path (or a name it was
    built from) is an argument of a download call in the same function."""
    func = where.frames[-1].node if where.frames else None
    if path is None or not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    used = {n.id for n in subnodes(path) if isinstance(n, ast.Name)}
    for name in list(used):
        held = ctx.lookup(name)
        if held is not None:
            if isinstance(held, ast.Call) and _download_helper(held, ctx):
                return True  # path = fetch(src, cache_dir)
            used |= {n.id for n in subnodes(held) if isinstance(n, ast.Name)}
    for call in subnodes(func):
        if isinstance(call, ast.Call) and last_attr(call.func) in _FETCH_TO_FILE and any(
                isinstance(n, ast.Name) and n.id in used
                for a in [*call.args, *(k.value for k in call.keywords)] for n in subnodes(a)):
            return True
    return False


_FETCH_HELPER = re.compile(r"(?i)^_?(fetch|download)(_|$)")


def _download_helper(call: ast.Call, ctx: Ctx) -> bool:
    """`fetch(src, cache_dir)`: a project function named for downloading, or one defined in
    this file whose body downloads to a file or opens a URL."""
    name = call.func.id if isinstance(call.func, ast.Name) else ""
    if not name:
        return False
    if _FETCH_HELPER.search(name):
        return True
    return any(isinstance(n, ast.Call) and (last_attr(n.func) in _FETCH_TO_FILE or (
        ctx.names.call_name(n) or "").startswith(("urllib.request.urlopen", "requests.get")))
        for fn in ctx.defs.get(name, ())[:1] for n in subnodes(fn))


def _default_false(value: ast.expr) -> bool:
    """`opts.get("weights_only", False)`, `getattr(cfg, "weights_only", False)`: False unless
    the configuration says otherwise."""
    if not isinstance(value, ast.Call):
        return False
    name = last_attr(value.func)
    wanted = 3 if name == "getattr" else 2 if name in ("get", "pop") else 0
    return bool(wanted) and len(value.args) == wanted and literal(value.args[-1]) is False


def _env_default_false(value: ast.expr, ctx: Ctx) -> bool:
    """`os.environ.get("CKPT_STRICT", "0") == "1"`, `bool(os.environ.get("X"))`: False unless
    the variable is set."""
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
            and value.func.id == "bool" and len(value.args) == 1
            and isinstance(value.args[0], ast.Call)
            and ctx.names.call_name(value.args[0]) in ("os.environ.get", "os.getenv")
            and len(value.args[0].args) == 1):
        return True
    if not (isinstance(value, ast.Compare) and len(value.ops) == 1
            and isinstance(value.ops[0], ast.Eq) and isinstance(value.left, ast.Call)):
        return False
    read = value.left
    name = ctx.names.call_name(read)
    if name not in ("os.environ.get", "os.getenv") or not read.args:
        return False
    if len(read.args) < 2:  # os.environ.get("SAFE_LOAD") == "1": None unless it is set
        return isinstance(literal(value.comparators[0]), str)
    return literal(read.args[1]) != literal(value.comparators[0])
