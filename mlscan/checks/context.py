"""Where a node sits: enclosing functions and classes, their roles, loops and gating conditions.

Roles (hook, data loading, teardown, thread, step) come from names (`__getitem__`, `__del__`,
`on_*` callbacks, `*_hook`) and from registrations seen anywhere in the file
(`register_forward_hook(f)`, `worker_init_fn=f`, `atexit.register(f)`, `Thread(target=f)`).
Registrations may come after the definition, so role questions are answered after the walk
(checks hand the walker a deferred decision).
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from mlscan.checks import triggers
from mlscan.checks.flow import FileFlow, class_field_default
from mlscan.checks.names import (
    NOT_LITERAL,
    Names,
    arg,
    bound_values,
    configured_number,
    defaults_by_name,
    folded_number,
    kwarg,
    last_attr,
    literal,
)
from mlscan.checks.nodes import subnodes
from mlscan.model import Finding, Rule, Severity

HOOK = "hook"
DATA = "data-loading"
WORKER_INIT = "worker_init_fn"
TEARDOWN = "teardown"
THREAD = "thread"
PROCESS = "process"
"""A `multiprocessing.Process(target=f)` body: a fresh process, whose start-up is its own."""
STEP = "step"
SIGNAL = "signal-handler"

_ROLE_WORDS = {HOOK: "a hook/callback", DATA: "data loading", WORKER_INIT: "a worker_init_fn",
               TEARDOWN: "a finalizer/atexit handler", THREAD: "a background thread",
               PROCESS: "a worker process",
               STEP: "a training/optimizer step", SIGNAL: "a signal handler"}
_DATA_METHODS = frozenset({"__getitem__", "__getitems__", "__iter__", "__next__", "__len__"})
_BATCHING_CLASS = re.compile(r"Dataset|Buffer|Sampler|Storage|Loader|Memory")
_BATCHING_METHOD = re.compile(r"(?i)^_?(minibatch\w*|\w*_batch(es)?|batch\w*|sample\w*|"
                              r"iter_\w+)$")
_STEP_METHODS = frozenset({"step", "forward", "training_step", "train_step",
                           "zero_grad", "optimizer_step", "backward_step", "validation_step"})
_CALLBACK = re.compile(r"^on_[a-z0-9_]+$|_(epoch|batch|step)_(start|end)$|"
                       r"^(before|after)_(run|train|val|eval|evaluate|test|epoch|iter|step|train_iter|"
                       r"train_epoch|val_epoch|val_iter|test_epoch|test_iter|backward|optimizer)")
_DATA_ARGS = frozenset({"sample", "samples", "batch", "img", "image", "label", "target", "example",
                        "results", "data_sample", "record"})
_PLAIN_HIGHER_ORDER = frozenset({"apply", "map", "sorted", "sort", "filter", "max", "min", "reduce",
                                 "defaultdict", "partial", "sub", "starmap", "tree_map",
                                 "register_buffer", "setdefault", "get", "pop",
                                 "optimize", "submit", "apply_async", "imap", "imap_unordered"})
"""(Functions run right away or once per job, such as an Optuna objective, are not hooks.)"""
_DATA_REGISTRATIONS = frozenset({"map", "with_transform", "set_transform", "add_transform"})
"""Methods (datasets, pipelines) whose first argument processes every sample."""
_SD_NAME = re.compile(r"(?i)state_dict|^sd$|^(model|ema)_?(sd|state)$|^weights$")
_SD_CALLS = frozenset({"state_dict", "load_file", "load_state_dict_from_url"})
_SEED_WORKER = re.compile(r"(?i)^_?(seed_?workers?|workers?_?seed(ing)?)$")
"""`seed_worker` from the PyTorch reproducibility notes: a worker_init_fn by its name (it is
often registered in another file)."""
_REGISTER_KWARGS = {"worker_init_fn": WORKER_INIT, "collate_fn": DATA, "target": THREAD,
                    "initializer": PROCESS}
"""(`Pool(initializer=f)`: run once as each worker process starts, like a main())"""



_BATCH_SOURCE = re.compile(r"(?i)loader|batches|(^|[_(.])dl\b")


def batch_loop(loop: ast.AST | None, backward: bool = True) -> bool:
    """A `for` over a data loader (`for x, y in val_loader`, `enumerate(tqdm(loader))`) or,
    with `backward`, one whose body runs `backward()`: one iteration per batch."""
    if not isinstance(loop, ast.For):
        return False
    if _BATCH_SOURCE.search(ast.unparse(loop.iter)):
        return True
    return backward and any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
                            and n.func.attr == "backward" for n in subnodes(loop))

@dataclass
class Frame:
    """One enclosing function (or the module, name '')."""

    name: str
    node: ast.AST | None
    cls: ClassInfo | None = None
    parent: str = ""
    """Name of the enclosing function ('' at module or class level)."""
    params: set[str] = field(default_factory=set)
    """Names bound by loops over `.parameters()`, `.named_parameters()`, `group["params"]`."""
    groups: set[str] = field(default_factory=set)
    """Names bound by loops over `optimizer.param_groups`."""
    states: set[str] = field(default_factory=set)
    """Names bound by loops over `optimizer.state.values()`."""
    assigned: dict[str, ast.expr] = field(default_factory=dict)
    """Last simple `name = value` (and `with open(x) as name`) seen so far."""
    history: dict[str, list[ast.expr]] = field(default_factory=dict)
    """Every value bound to a name in this function (`n = 1` in one branch, `n =
    dist.get_world_size()` in the other): triggers look at all of them."""

    def bind(self, name: str, value: ast.expr) -> None:
        self.assigned[name] = value
        values = self.history.setdefault(name, [])
        if len(values) < 8:
            values.append(value)


@dataclass(frozen=True)
class ClassInfo:
    name: str
    bases: tuple[str, ...]


@dataclass(frozen=True)
class Where:
    """A snapshot of the context of one node, for decisions taken after the walk."""

    frames: tuple[Frame, ...]
    conds: tuple[ast.expr, ...]
    loops: tuple[ast.For | ast.While, ...]
    withs: tuple[str, ...]


class Ctx:
    """State shared by all checks while walking one module (or notebook)."""

    def __init__(self, path: str, member: str | None, lines: list[str],
                 disk_path: str | None = None) -> None:
        self.path = path
        self.disk_path = disk_path or path
        """Where sibling modules are looked up (the display path is relative to --base)."""
        self.member = member
        self.lines = lines
        self.synthesized = 0
        """Calls the walker made up so far (bounded: see walker._MAX_SYNTHESIZED)."""
        self.names = Names()
        self.names.path = self.disk_path
        self.frames: list[Frame] = [Frame("", None)]
        self.classes: list[ClassInfo] = []
        self.conds: list[ast.expr] = []
        self.loops: list[ast.For | ast.While] = []
        self.withs: list[str] = []
        self.defs: dict[str, list[ast.FunctionDef | ast.AsyncFunctionDef]] = {}
        self.class_defs: dict[str, ast.ClassDef] = {}
        self.hidden_names: set[str] = set()
        self.code_functions: set[str] = set()  # names bound to types.FunctionType(...)
        """Names bound to `getattr(x, <name spelled indirectly>)`."""
        self.self_item_writes: dict[str, list[ast.expr]] = {}
        """Values written into parts of `self.X` (`self._scale[ids] = -0.25`)."""
        self.trigger_flags: dict[str, frozenset[str]] = {}
        """State set only under a trigger (`if world > 256: _State.topology = "tree"`): a later
        condition on it carries the trigger."""
        self.registered_classes: dict[str, set[str]] = {}
        """Classes whose instances were registered (`worker_init_fn=WorkerInit(cfg)`)."""
        self.decorators: set[str] = set()
        """Names used as decorators (`@every_step`): their inner wrappers run on every call."""
        self.self_attrs: dict[str, ast.expr] = {}
        """`self.x = value` anywhere in the file, by attribute name (classes rarely clash)."""
        self.registered: dict[str, set[str]] = {}
        self.registrations: list[tuple[str, ast.expr, dict[str, float], ast.Call]] = []
        """(registering function, hook, numbers bound by functools.partial, the registering
        call) per hook."""
        self.lambda_roles: dict[int, str] = {}
        self.callers: dict[str, set[str]] = {}
        # (callee, caller) -> classes the calling methods belong to: `__call__` of a collate
        # class and of a worker-init class are different callers
        self.caller_classes: dict[tuple[str, str], set[str]] = {}
        self.call_sites: dict[str, int] = {}
        """How many calls name each local function (a helper called once is not shared)."""
        """Function name -> names of functions that call it (`f()` or `self.f()`)."""
        self.frames_by_name: dict[str, list[Frame]] = {}
        """Role of lambdas passed as callbacks, by id of the Lambda node."""
        self.replacements: list[tuple[str, ast.AST]] = []
        """(patched API, the local function or lambda put in its place)."""
        self.findings: list[Finding] = []
        self._deferred: list[Callable[[], None]] = []
        self._cond_cache: dict[int, tuple[ast.AST, frozenset[str]]] = {}
        """id -> (node, kinds); the node is kept so that a freed node's id cannot be reused
        for a different condition (the walker makes `not cond` nodes for else branches)."""
        self.tree: ast.AST | None = None
        self._flow: FileFlow | None = None
        self.is_package_init = path.replace("\\", "/").endswith("__init__.py")
        self._mentions: dict[str, bool] = {}
        self._source: str | None = None

    # -- reporting ---------------------------------------------------------------------
    def report(self, rule: Rule, node: ast.AST, message: str, *,
               severity: Severity | None = None) -> None:
        line = getattr(node, "lineno", None)
        col = getattr(node, "col_offset", None)
        text = self.lines[line - 1].strip() if line and 0 < line <= len(self.lines) else ""
        self.findings.append(rule.finding(
            self.path, message, evidence=text[:200], member=self.member, line=line,
            column=None if col is None else col + 1, severity=severity))

    def defer(self, fn: Callable[[], None]) -> None:
        self._deferred.append(fn)

    def finish(self) -> list[Finding]:
        for fn in self._deferred:
            fn()
        self._deferred.clear()
        return self.findings

    # -- context -----------------------------------------------------------------------
    @property
    def frame(self) -> Frame:
        return self.frames[-1]

    def where(self, inline: ast.AST | None = None) -> Where:
        """The current context; `inline` adds conditions of `a if cond else b` inside it."""
        conds = tuple(self.conds)
        if inline is not None:
            conds += tuple(n.test for n in subnodes(inline) if isinstance(n, ast.IfExp))
        loops = tuple(lp for lp in self.loops if not hasattr(lp, "over_callables"))
        return Where(tuple(self.frames), conds, loops, tuple(self.withs))

    def trigger_kinds(self, where: Where) -> frozenset[str]:
        kinds: set[str] = set()
        for cond in where.conds:
            entry = self._cond_cache.get(id(cond))
            if entry is not None and entry[0] is cond:
                cached = entry[1]
            else:
                cached = triggers.classify(cond, self.names, self.resolver(where))
                if self.trigger_flags:  # `_State.topology == "tree"`, set only on big jobs
                    for node in subnodes(cond):
                        if isinstance(node, (ast.Attribute, ast.Name)):
                            cached |= self.trigger_flags.get(ast.unparse(node), frozenset())
                self._cond_cache[id(cond)] = (cond, cached)
            kinds.update(cached)
        for loop in where.loops:
            # `for f in files[:len(files) - keep]` with keep = 0 after a date: the trigger
            # decides how often the loop runs, which gates its body like a condition.
            if isinstance(loop, ast.For):
                entry = self._cond_cache.get(id(loop))
                if entry is not None and entry[0] is loop:
                    cached = entry[1]
                else:
                    # (not randomness: looping over a shuffled permutation is every epoch)
                    cached = triggers.classify(loop.iter, self.names, self.resolver(where),
                                               condition=False) & (
                                                   triggers.STRONG - {triggers.RANDOM})
                    self._cond_cache[id(loop)] = (loop, cached)
                kinds.update(cached)
        return frozenset(kinds)

    def resolver(self, where: Where | None = None) -> triggers.Resolver:
        """Name -> value assigned to it in the enclosing functions (innermost first)."""
        frames = where.frames if where is not None else tuple(self.frames)

        def resolve(name: str) -> ast.expr | None:
            if name.startswith("self."):
                value = self.self_attrs.get(name[5:])
                return value if value is not None else self.returns(name[5:])  # @property
            if "." in name:
                owner, field_name = name.split(".", 1)
                return self.config_field(owner, field_name, frames)
            if name.startswith("()"):
                return self.returns(name[2:])
            for frame in reversed(frames):
                values = frame.history.get(name)
                if values:
                    return values[0] if len(values) == 1 else ast.Tuple(
                        elts=list(values), ctx=ast.Load())
            default = self.param_default(name)  # def prune(self, deadline=datetime(2025, ...))
            fixed_day = isinstance(default, ast.Call) and triggers.calendar_date(default)
            return default if fixed_day else None
        return resolve

    def returns(self, name: str) -> ast.expr | None:
        """What a small local function returns (`def host_is(p): return gethostname()...`),
        as one tuple of its return values; None for unknown or large functions."""
        fns = self.defs.get(name)
        if not fns or len(fns) > 1 or len(fns[0].body) > 8:
            return None
        values = [n.value for n in subnodes(fns[0]) if isinstance(n, ast.Return) and n.value]
        local = bound_values(fns[0]) if not any(isinstance(v, ast.Tuple) for v in values) else {}
        if local:  # `extra = max(0, world - LIMIT); return rate * extra`: the locals put in
            values = [_Substitute(local).visit(copy.deepcopy(v)) for v in values]
            # (not for tuples: `return nnodes, rank, host` is read one element at a time)
        if values and any(isinstance(n, ast.Subscript) for v in values for n in subnodes(v)):
            # `for key in ("SLURM_JOB_NUM_NODES", ...): return int(os.environ[key])`: the keys
            # a returned lookup reads come from the loop
            values += [n.iter for n in subnodes(fns[0]) if isinstance(n, ast.For)]
        return ast.Tuple(elts=values, ctx=ast.Load()) if values else None

    def classify(self, expr: ast.AST, where: Where | None = None) -> frozenset[str]:
        """Trigger kinds a value depends on, following names to their assignments."""
        return triggers.classify(expr, self.names, self.resolver(where))

    def walk_values(self, expr: ast.AST, depth: int = 0, methods: bool = False) -> list[ast.AST]:
        """`subnodes(expr)` plus the values assigned to the names it reads (two levels); with
        `methods`, also what `self.<method>(...)` returns."""
        out = list(subnodes(expr))
        if depth < 2:
            for node in out[:]:
                if isinstance(node, ast.Name):
                    value = self.lookup(node.id)
                    if value is not None and value is not expr:
                        out.extend(self.walk_values(value, depth + 1, methods))
                elif isinstance(node, ast.Call) and (isinstance(node.func, ast.Name) or (
                        methods and isinstance(node.func, ast.Attribute)
                        and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == "self")):
                    for value in self._called_returns(last_attr(node.func)):
                        out.extend(self.walk_values(value, depth + 1, methods))
        return out

    def _called_returns(self, name: str) -> list[ast.expr]:
        """What a small local function called as `name()` returns (also a parameter whose
        default is that function), with its own parameters' defaults put in: `offset()` with
        `offset=_stream_offset` and `def _stream_offset(clock=time.perf_counter_ns): return
        clock() ^ os.getpid()` reads the clock."""
        fns = self.defs.get(name)
        if not fns:
            bound = self.lookup(name) or self.param_default(name)
            fns = self.defs.get(bound.id) if isinstance(bound, ast.Name) else None
        if not fns or len(fns) > 1 or len(fns[0].body) > 8:
            return []
        defaults = defaults_by_name(fns[0])
        values = [n.value for n in subnodes(fns[0]) if isinstance(n, ast.Return) and n.value]
        return [_Substitute(defaults).visit(copy.deepcopy(v)) for v in values] if defaults \
            else values

    def loop_source(self, name: str) -> ast.expr | None:
        """What the innermost enclosing `for` that binds `name` iterates over."""
        for loop in reversed(self.loops):
            if isinstance(loop, ast.For) and any(
                    isinstance(n, ast.Name) and n.id == name for n in subnodes(loop.target)):
                return loop.iter
        return None

    def follow(self, expr: ast.AST | None, hops: int = 3) -> ast.AST | None:
        """`expr` followed through names, parameter defaults and `self.` attributes to what
        they hold (`seeders` -> `SEEDERS` -> the tuple), at most `hops` steps."""
        for _ in range(hops):
            if isinstance(expr, ast.Name):
                expr = self.lookup(expr.id) or self.param_default(expr.id)
            elif isinstance(expr, ast.Attribute):
                held: ast.AST | None = self.value_of(expr)
                if held is None and isinstance(expr.value, ast.Name) and expr.value.id == "self":
                    found = self.resolve(expr)  # `seeders = (random.seed, ...)` in the class body
                    held = found if found is not expr else None
                expr = held
            else:
                break
        return expr

    def mentions(self, text: str) -> bool:
        """Whether the file's source contains `text` (cached per file)."""
        found = self._mentions.get(text)
        if found is None:
            if self._source is None:  # one joined copy: a C-level search instead of a loop
                self._source = "\n".join(self.lines)
            found = self._mentions[text] = text in self._source and (
                "\n" not in text)  # (a gate never spans lines; the per-line test did not)
        return found

    def param_default(self, name: str) -> ast.expr | None:
        """The default of parameter `name` of an enclosing function (or lambda), else of an
        `__init__` in the file (`self.streams = streams`, `def __init__(self, streams=X)`)."""
        fns = [f.node for f in reversed(self.frames)] + list(self.defs.get("__init__", ()))
        for fn in fns:
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                default = defaults_by_name(fn).get(name)
                if default is not None:
                    return default
        return None

    def const(self, expr: ast.AST | None, depth: int = 0) -> object:
        """`literal()` that follows a name to the constant assigned to it (`mult = -1.0`),
        then the file's value flow (`cfg["probe"]["gain"]` with `cfg` passed in by a caller)."""
        if isinstance(expr, ast.Name) and depth < 2:  # (or `__init__`'s default for it)
            value = self.lookup(expr.id) or self.param_default(expr.id)
            if value is not None:
                found = self.const(value, depth + 1)
                if found is not NOT_LITERAL:
                    return found
        found = literal(expr)
        if found is NOT_LITERAL and depth == 0 and isinstance(
                expr, (ast.Name, ast.Subscript, ast.Attribute)):
            resolved = self.resolve(expr)
            found = literal(resolved)
            if found is NOT_LITERAL and isinstance(resolved, (ast.Call, ast.BoolOp)):
                found = configured_number(resolved)  # float(os.environ.get("K", "0.28"))
        if found is NOT_LITERAL and isinstance(expr, (ast.BinOp, ast.Call)):
            found = folded_number(expr)  # functools.reduce(operator.mul, (2, 2, 2.5))
        return found

    def share_flow(self, flow: FileFlow) -> None:
        """Reuse the value-flow index normalisation already built for this file."""
        self._flow = flow

    @property
    def flow(self) -> FileFlow:
        if self._flow is None:
            empty = ast.Module(body=[], type_ignores=[])
            self._flow = FileFlow(self.tree if self.tree is not None else empty, self.disk_path)
        return self._flow

    def resolve(self, expr: ast.AST) -> ast.AST | None:
        """What `expr` holds by the file's value flow (itself when unknown)."""
        fn = next((f.node for f in reversed(self.frames)
                   if isinstance(f.node, (ast.FunctionDef, ast.AsyncFunctionDef))), None)
        if fn is None:  # a decision deferred to after the walk
            fn = self.flow.owner(expr)
        return self.flow.resolve(expr, fn)[0]

    def roles(self, where: Where) -> list[tuple[str, Frame]]:
        """(role, frame) for every enclosing function with a role, innermost first."""
        out = []
        for frame in reversed(where.frames):
            for role in sorted(self.frame_roles(frame)):  # sorted: messages stable across runs
                out.append((role, frame))
        return out

    def frame_roles(self, frame: Frame) -> set[str]:
        """Own roles plus those of callers up to two calls away (a helper that
        `__getitem__` calls runs during data loading too)."""
        roles = self._own_roles(frame)
        seen = {frame.name}
        todo = [(frame.name, 0)]
        while todo:
            name, depth = todo.pop()
            for caller in self.callers.get(name, ()):
                if caller in seen:
                    continue
                seen.add(caller)
                classes = self.caller_classes.get((name, caller), set())
                for caller_frame in self.frames_by_name.get(caller, ()):
                    if (caller_frame.cls.name if caller_frame.cls is not None else "") in classes:
                        roles |= self._own_roles(caller_frame) - {WORKER_INIT}
                if depth < 1:
                    todo.append((caller, depth + 1))
        return roles

    def own_roles(self, frame: Frame) -> set[str]:
        """Roles of the function itself (not inherited from its callers)."""
        return self._own_roles(frame)

    def _own_roles(self, frame: Frame) -> set[str]:
        if frame.node is None:
            return set()
        if isinstance(frame.node, ast.Lambda):
            role = self.lambda_roles.get(id(frame.node))
            return {role} if role else set()
        name = frame.name
        roles = set(self.registered.get(name, ()))
        cls = frame.cls
        if name == "__call__" and cls is not None:
            roles |= self.registered_classes.get(cls.name, set())
        if name in _DATA_METHODS and cls is not None:
            roles.add(DATA)
        if name == "__call__" and cls is not None and not any(
                "Pipeline" in b for b in (cls.name, *cls.bases)) and (re.search(
                r"(?i)collat|transform|augment|crop|flip|jitter|resize|erase|cutout|mixup|"
                r"cutmix|noise|blur|rotat|affine|pad|normali[sz]e", cls.name + " ".join(cls.bases))
                or _DATA_ARGS & _arg_names(frame.node)):
            roles.add(DATA)
        if "collate" in name or (name == "set_epoch" and cls is not None):
            roles.add(DATA)  # DistributedSampler.set_epoch: called every epoch
        if (cls is not None and _BATCHING_CLASS.search(" ".join((cls.name, *cls.bases)))
                and _BATCHING_METHOD.search(name)):
            roles.add(DATA)  # RolloutBuffer.minibatches(): runs for every batch
        if ("worker_init" in name or _SEED_WORKER.search(name)) and PROCESS not in (
                self.registered.get(name, ())):
            roles.add(WORKER_INIT)  # (a Pool initializer named _worker_init is process start)
        if name == "__del__":
            roles.add(TEARDOWN)
        if (name.endswith("_hook") or name == "hook") and not name.startswith("test"):
            roles.add(HOOK)
        elif _hook_signature(frame.node):
            roles.add(HOOK)  # def _bound(module, inputs, output): registered out of sight
        elif cls is not None and _CALLBACK.search(name):
            roles.add(HOOK)
        if name in _STEP_METHODS and cls is not None:
            roles.add(STEP)
        if name == "run" and cls is not None and any("Thread" in b for b in cls.bases):
            roles.add(THREAD)  # class Stats(threading.Thread): def run(self)
        if STEP in self.registered.get(name, ()) and cls is None:
            roles.add(STEP)
        return roles

    def in_decorator_wrapper(self, where: Where) -> str:
        """Name of the decorator whose inner wrapper encloses `where` ('' if none)."""
        for frame in where.frames:
            if frame.parent and frame.parent in self.decorators:
                return frame.parent
        return ""

    def in_optimizer_class(self, where: Where) -> bool:
        for frame in where.frames:
            if frame.cls is not None and any("optim" in b.lower() for b in frame.cls.bases):
                return True
        return False

    def trainer_callback(self) -> str:
        """Name of the event when the current function is a Hugging Face `TrainerCallback`
        method (`def on_step_end(self, args, state, control, ...)`), else ''."""
        fn = self.frame.node
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or not (
                fn.name.startswith("on_")):
            return ""
        names = {a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]}
        cls = self.frame.cls
        if {"state", "control"} <= names or (cls is not None and any(
                b.endswith("TrainerCallback") for b in cls.bases)):
            return fn.name
        return ""

    def param_name(self, name: str, where: Where) -> bool:
        return any(name in frame.params for frame in where.frames)

    def state_name(self, name: str, where: Where) -> bool:
        return any(name in frame.states for frame in where.frames)

    def group_name(self, name: str, where: Where) -> bool:
        return any(name in frame.groups for frame in where.frames)

    def value_of(self, expr: ast.expr) -> ast.expr | None:
        """What `self.x` (any method of the file), `cfg.x` (a field default of the config
        class `cfg` is typed or defaulted with) or a name (enclosing functions) was bound to."""
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name) and (
                expr.value.id == "self"):
            return self.self_attrs.get(expr.attr)
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            return self.config_field(expr.value.id, expr.attr, tuple(self.frames))
        if isinstance(expr, ast.Name):
            return self.lookup(expr.id)
        return None

    def config_field(self, owner: str, name: str, frames: tuple[Frame, ...] | list[Frame]
                     ) -> ast.expr | None:
        """`cfg.heartbeat_s` with `def f(cfg: DistConfig = DistConfig())` and `heartbeat_s:
        float = 900.0` in the class body: the field's default."""
        for frame in reversed(frames):
            fn = frame.node
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            params = {a.arg: a for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)}
            if owner not in params:
                continue
            hint = params[owner].annotation
            default = defaults_by_name(fn).get(owner)
            cls_name = last_attr(hint) if hint is not None else (
                last_attr(default.func) if isinstance(default, ast.Call) else "")
            cls = self.class_defs.get(cls_name)
            return class_field_default(cls, name) if cls is not None else None
        return None

    def lookup(self, name: str) -> ast.expr | None:
        for frame in reversed(self.frames):
            value = frame.assigned.get(name)
            if value is not None:
                return value
        return None

    # -- registrations -----------------------------------------------------------------
    def note_call(self, call: ast.Call) -> None:
        """Remember functions handed to hook/callback/thread/loader registrations."""
        attr = last_attr(call.func)
        func = call.func
        if self.frame.node is not None and (isinstance(func, ast.Name) or (
                isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id in ("self", "cls"))):
            self.callers.setdefault(attr, set()).add(self.frame.name)
            self.caller_classes.setdefault((attr, self.frame.name), set()).add(
                self.frame.cls.name if self.frame.cls is not None else "")
            self.call_sites[attr] = self.call_sites.get(attr, 0) + 1
        qual = self.names.call_name(call)
        target: ast.expr | None = None
        role = ""
        if attr == "register_comm_hook":  # ddp.register_comm_hook(state, hook)
            target, role = arg(call, 1, "hook"), HOOK
        elif "register" in attr and attr.endswith("hook"):
            target, role = arg(call, 0, "hook"), HOOK
        elif qual in ("atexit.register", "weakref.finalize"):
            target, role = arg(call, 1 if qual == "weakref.finalize" else 0, "func"), TEARDOWN
        elif qual == "signal.signal":
            # Exiting after a checkpoint in a SIGTERM/SIGUSR1 handler is the preemption recipe.
            target, role = arg(call, 1, "handler"), SIGNAL
        elif qual.endswith(("threading.Timer", "Timer")):
            target, role = arg(call, 1, "function"), THREAD
        elif attr == "step" and (call.args or call.keywords):
            target, role = arg(call, 0, "closure"), STEP  # optimizer.step(closure)
        if target is not None:
            self._register(target, role, call)
        for key, kw_role in _REGISTER_KWARGS.items():
            value = kwarg(call, key)
            if value is not None:
                self._register(value, PROCESS if key == "target" and attr.endswith(
                    "Process") else kw_role, call)
        # Trainer(callbacks=[f]), add_callback(f), hooks={"x": f}: functions run later as hooks.
        for value in _callback_values(call, attr):
            if isinstance(value, (ast.Name, ast.Lambda)) or (
                    isinstance(value, ast.Call) and last_attr(value.func) == "partial"):
                self._register(value, HOOK, call)
        if attr in _DATA_REGISTRATIONS and call.args and isinstance(call.func, ast.Attribute):
            self._register(call.args[0], DATA, call)  # dataset.map(preprocess_function)
        if attr not in _PLAIN_HIGHER_ORDER:
            # Any other lambda handed to a call is a callback run later (LambdaLR, callbacks).
            for value in [*call.args, *(kw.value for kw in call.keywords)]:
                if isinstance(value, ast.Lambda):
                    self.lambda_roles.setdefault(id(value), HOOK)

    def _bound_number(self, expr: ast.expr) -> float | None:
        """A number bound into a hook: a constant, or the loop variable of `for _, s in
        TABLE.items()` over a table of numbers (the first entry that is not 1)."""
        value = self.const(expr)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        source = self.loop_source(expr.id) if isinstance(expr, ast.Name) else None
        if not (isinstance(source, ast.Call) and last_attr(source.func) in ("items", "values")
                and isinstance(source.func, ast.Attribute)):
            return None
        table = self.follow(source.func.value)
        if isinstance(table, ast.BoolOp):  # self.scales = scales or {"head": 0.02}
            table = next((v for v in table.values if isinstance(v, ast.Dict)), None)
        if not isinstance(table, ast.Dict):
            return None
        numbers: list[float] = []
        for item in table.values:
            number = literal(item)
            if isinstance(number, (int, float)) and not isinstance(number, bool):
                numbers.append(float(number))
        return next((n for n in numbers if n != 1), numbers[0] if numbers else None)

    def _register(self, target: ast.expr, role: str, call: ast.Call) -> None:
        bound: dict[str, float] = {}
        if isinstance(target, ast.Name):  # hook = lambda m, i, o: ...; register(hook)
            assigned = self.lookup(target.id)
            if isinstance(assigned, ast.Lambda) or (
                    isinstance(assigned, ast.Call) and last_attr(assigned.func) == "partial"):
                target = assigned
        if isinstance(target, ast.Call) and target.args and last_attr(target.func) == "partial":
            pairs = [(kw.arg, kw.value) for kw in target.keywords if kw.arg] + [
                (f"_arg{i}", a) for i, a in enumerate(target.args[1:], 1)]
            for key, expr in pairs:
                value = self._bound_number(expr)
                if value is None and isinstance(expr, ast.UnaryOp) and isinstance(
                        expr.op, ast.USub):
                    value = -1.0  # partial(torch.mul, other=-gain): the sign is what counts
                if value is not None:
                    bound[key] = value
            target = target.args[0]
        if isinstance(target, ast.Lambda):
            self.lambda_roles[id(target)] = role
        if isinstance(target, ast.Call) and isinstance(target.func, ast.Name) and (
                target.func.id[:1].isupper()):  # worker_init_fn=WorkerInit(cfg): its __call__
            self.registered_classes.setdefault(target.func.id, set()).add(role)
            return
        name = last_attr(target)
        if name:
            self.registered.setdefault(name, set()).add(role)
        if role == HOOK:
            self.registrations.append((last_attr(call.func), target, bound, call))

    def table_numbers(self, expr: ast.expr) -> list[float]:
        """The numbers of a module-level dict read by `TABLE.get(k, d)` / `TABLE[k]` (also
        through a local name: `sign = _SIGN.get(suffix, 1.0)`)."""
        if isinstance(expr, ast.Name):
            bound = self.lookup(expr.id)
            expr = bound if isinstance(bound, (ast.Call, ast.Subscript)) else expr
        table: ast.AST | None = None
        if (isinstance(expr, ast.Call) and last_attr(expr.func) == "get"
                and isinstance(expr.func, ast.Attribute) and isinstance(expr.func.value, ast.Name)):
            table = self.lookup(expr.func.value.id)
        elif isinstance(expr, ast.Subscript) and isinstance(expr.value, ast.Name):
            table = self.lookup(expr.value.id)
        if not isinstance(table, ast.Dict):
            return []
        values = [literal(v) for v in table.values]
        return [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]

    def is_state_dict(self, expr: ast.expr, depth: int = 0) -> bool:
        """`model.state_dict()`, `load_file(path)`, `sd` / `state_dict` (by name or by what was
        assigned to it), `checkpoint["state_dict"]`: a mapping of parameter tensors."""
        if isinstance(expr, ast.Call):
            owner = expr.func.value if isinstance(expr.func, ast.Attribute) else None
            if owner is not None and re.search(r"(?i)opt|sched|scaler", last_attr(owner) or ""):
                return False  # optimizer.state_dict(): optimizer state, not weights
            if (owner is not None and last_attr(expr.func) in ("get", "pop") and expr.args
                    and literal(expr.args[0]) in ("model", "state_dict", "module", "weights")
                    and depth < 3):
                return self.is_state_dict(owner, depth + 1)  # ckpt.get("model", ckpt)
            if (owner is not None and last_attr(expr.func) in ("get", "pop")
                    and len(expr.args) == 2 and depth < 3
                    and self.is_state_dict(expr.args[1], depth + 1)):
                return True  # state.get("v_head", state): a sub-dict or the dict itself
            if self.frame.name == "__getitem__":
                return False  # feat = torch.load(self.items[idx][0]): one sample's data
            return last_attr(expr.func) in _SD_CALLS or self.names.call_name(expr) in (
                "torch.load", "safetensors.torch.load_file", "safetensors.torch.load")
        if isinstance(expr, ast.Subscript):
            key = literal(expr.slice)
            if key in ("model", "module", "ema", "net") and isinstance(expr.value, ast.Call):
                return self.is_state_dict(expr.value, depth + 1)  # torch.load(p)["model"]
            if key in ("model", "module", "net") and isinstance(expr.value, ast.Name) and (
                    depth < 3):  # ckpt["model"] with ckpt = torch.load(p)
                return any(isinstance(v, ast.Call) and self.is_state_dict(v, depth + 1)
                           for v in self.values_of(expr.value.id))
            return isinstance(key, str) and bool(_SD_NAME.search(key))
        if isinstance(expr, ast.DictComp) and expr.generators and depth < 2:
            it = expr.generators[0].iter  # {k.replace("module.", ""): v for k, v in sd.items()}
            return (isinstance(it, ast.Call) and isinstance(it.func, ast.Attribute)
                    and self.is_state_dict(it.func.value, depth + 1))
        if isinstance(expr, ast.Name):
            if _SD_NAME.search(expr.id):
                return True
            # every value the name took (`state = torch.load(p); state = {...: v for ...}`)
            return depth < 3 and any(self.is_state_dict(v, depth + 1)
                                     for v in self.values_of(expr.id))
        return False

    def values_of(self, name: str) -> list[ast.expr]:
        """All values bound to `name` in the innermost enclosing function that binds it."""
        for frame in reversed(self.frames):
            values = frame.history.get(name)
            if values:
                return values
        return []

    def replacement_function(self, value: ast.expr) -> ast.AST | None:
        """The function a patch installs: a lambda, a local def, or the inner wrapper that a
        local decorator returns (`setattr(W, "add_scalar", _soften(W.add_scalar))`)."""
        if isinstance(value, ast.Lambda):
            return value
        if isinstance(value, ast.Name):
            fns = self.defs.get(value.id, [])
            if len(fns) > 1:  # `def log` as a method and as the wrapper: the one in this scope
                scope = self.frame.node
                fns = [f for f in fns if scope is not None and scope is not f and getattr(
                    scope, "lineno", 0) <= f.lineno <= (getattr(scope, "end_lineno", 0) or 0)]
            return fns[-1] if fns else None
        if isinstance(value, ast.Call):
            func = value.func
            if (isinstance(func, ast.Call) and last_attr(func.func) == "wraps" and value.args
                    and isinstance(value.args[0], (ast.Lambda, ast.Name))):
                return self.replacement_function(value.args[0])  # functools.wraps(f)(lambda ..)
            if last_attr(func) == "partial" and value.args and isinstance(
                    value.args[0], (ast.Lambda, ast.Name)):
                return self.replacement_function(value.args[0])  # partial(_wrap, wandb.log)
            if isinstance(func, ast.Call):  # _after(post)(cls.step): decorator factory
                func = func.func
            fns = self.defs.get(last_attr(func), []) if isinstance(func, ast.Name) else []
            cls = self.class_defs.get(func.id) if isinstance(func, ast.Name) else None
            if cls is not None:  # _Coercion()(W.add_scalar): a decorator object's __call__
                fns = [f for f in cls.body if isinstance(f, (ast.FunctionDef,
                                                             ast.AsyncFunctionDef))
                       and f.name == "__call__"]
            if len(fns) != 1:
                return None
            inner = [n for n in subnodes(fns[0]) if isinstance(n, (ast.FunctionDef,
                     ast.AsyncFunctionDef)) and n is not fns[0]]
            return inner[-1] if inner else None
        return None

    def describe_roles(self, roles: list[tuple[str, Frame]]) -> str:
        role, frame = roles[0]
        owner = f"{frame.cls.name}.{frame.name}" if frame.cls else frame.name
        if owner.startswith("<lambda"):
            return f"a lambda ({_ROLE_WORDS[role]})"
        return f"{owner}() ({_ROLE_WORDS[role]})"


def _callback_values(call: ast.Call, attr: str) -> list[ast.expr]:
    values: list[ast.expr] = []
    if "callback" in attr.lower():
        values.extend(call.args)
    for kw in call.keywords:
        if kw.arg and ("callback" in kw.arg or kw.arg in ("hooks", "hook")):
            values.append(kw.value)
    out: list[ast.expr] = []
    for value in values:
        if isinstance(value, (ast.List, ast.Tuple, ast.Set)):
            out.extend(value.elts)
        elif isinstance(value, ast.Dict):
            out.extend(v for v in value.values if v is not None)
        else:
            out.append(value)
    return out


_HOOK_MODULE = frozenset({"module", "mod", "m", "layer", "_module", "_mod", "_m", "_"})
_HOOK_INPUT = frozenset({"input", "inputs", "inp", "args", "grad_input", "grad_in", "_input",
                         "_inputs", "_inp", "_args", "_"})
_HOOK_OUTPUT = frozenset({"output", "outputs", "out", "grad_output", "grad_out", "result"})


def _hook_signature(node: ast.AST | None) -> bool:
    """`(module, inputs, output)`: the parameters of a forward or module backward hook."""
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    names = [a.arg for a in (*node.args.posonlyargs, *node.args.args)]
    if names and names[0] == "self":
        names = names[1:]
    return (len(names) == 3 and names[0] in _HOOK_MODULE and names[1] in _HOOK_INPUT
            and names[2] in _HOOK_OUTPUT)


def _arg_names(node: ast.AST | None) -> set[str]:
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        return set()
    return {a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)}


class _Substitute(ast.NodeTransformer):
    """Parameter names replaced by their default values."""

    def __init__(self, defaults: dict[str, ast.expr]) -> None:
        self.defaults = defaults

    def visit_Name(self, node: ast.Name) -> ast.expr:
        value = self.defaults.get(node.id)
        return copy.deepcopy(value) if value is not None else node
