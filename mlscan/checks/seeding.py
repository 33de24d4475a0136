"""MLS301: RNG reseeding hidden where it changes training (hooks, data loading, triggers)."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import DATA, PROCESS, TEARDOWN, WORKER_INIT, Ctx, Where, batch_loop
from mlscan.checks.names import NOT_LITERAL, kwarg, last_attr, literal, root_name
from mlscan.checks.nodes import called_names, subnodes
from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

HIDDEN_RESEED = register(Rule(
    code="MLS301", name="hidden-rng-reseed", severity=Severity.HIGH,
    confidence=Confidence.MEDIUM, cwe=506,
    summary="RNG reseeded inside a hook, data loader, finalizer, thread, loop or behind a trigger.",
    doc=RuleDoc(
        what="Flags torch/numpy/random seeding and RNG-state calls (`torch.manual_seed`, "
        "`torch.cuda.manual_seed_all`, `np.random.seed`, `random.seed`, `torch.set_rng_state`, "
        "`seed_everything`...) placed inside hooks and callbacks, `Dataset.__getitem__`, "
        "collate functions, `__del__`, atexit handlers, threads, training steps, inside a "
        "training loop with a constant seed, at import time of a package, behind a condition on "
        "randomness, time, rank, host, user or world size, or seeded from time/pid/urandom. "
        "Seeding once at start-up (module top, main(), set_seed(args.seed)) and the standard "
        "worker_init_fn recipe (`torch.initial_seed() % 2**32`) stay quiet.",
        why="Reseeding mid-run silently repeats dropout masks, shuffles and augmentations, or "
        "makes runs irreproducible; it was one of the techniques in the 2024 training-sabotage "
        "case. Nobody debugging a loss curve looks for a seed call inside a hook.",
        example="def fwd_hook(m, i, o):\n    torch.manual_seed(0)",
        use_instead="Seed once in main(); give DataLoader a torch.Generator; seed workers "
        "with the worker_init_fn recipe from the PyTorch reproducibility notes.",
        references=("https://pytorch.org/docs/stable/notes/randomness.html",))))

_SEED_FUNCS = frozenset({
    "torch.manual_seed", "torch.random.manual_seed", "torch.cuda.manual_seed",
    "torch.cuda.manual_seed_all", "torch.cuda.random.manual_seed",
    "torch.cuda.random.manual_seed_all", "torch.set_rng_state", "torch.random.set_rng_state",
    "torch.cuda.set_rng_state", "torch.cuda.set_rng_state_all", "torch.seed", "torch.random.seed",
    "torch.cuda.seed", "torch.cuda.seed_all", "numpy.random.seed", "numpy.random.set_state",
    "random.seed", "random.setstate", "tensorflow.random.set_seed", "tf.random.set_seed",
    "tensorflow.keras.utils.set_random_seed", "keras.utils.set_random_seed",
    "tf.keras.utils.set_random_seed",
    "torch.mps.manual_seed", "torch.xpu.manual_seed", "torch.xpu.manual_seed_all",
    "torch.default_generator.manual_seed", "torch.default_generator.set_state",
    "torch.random.default_generator.manual_seed", "torch.random.default_generator.set_state",
})
_JAX_KEYS = frozenset({"jax.random.PRNGKey", "jax.random.key", "jax.random.fold_in"})
_SEED_HELPERS = frozenset({"seed_everything", "set_seed", "set_random_seed",
                           "enable_full_determinism"})
_ENTROPY = ("time.", "os.getpid", "os.urandom", "random.", "numpy.random.", "secrets.",
            "datetime.", "uuid.", "socket.gethostname", "platform.node", "getpass.getuser")


RECURRING_CAPTURE = re.compile(r"(?i)(validation|val|eval|test|predict|sample)\w*_?(start|begin)|"
                                r"(before|pre)_?\w*(validation|val|eval|test|predict|sample)")


def _paired_restore(call: ast.Call, ctx: Ctx, where: Where) -> bool:
    """`torch.set_rng_state(self._saved)` where `_saved` is captured afresh in the matching
    `*_start` hook (validation isolation); one-time snapshots are snapshots.py's business."""
    snap = call.args[0] if call.args else None
    if not (isinstance(snap, ast.Attribute) and isinstance(snap.value, ast.Name)
            and snap.value.id == "self"):
        return False
    inner = where.frames[-1].name
    return bool(re.search(r"(?i)(end|after|finish)", inner)) and any(
        RECURRING_CAPTURE.search(f.name) and any(
            isinstance(n, ast.Assign) and any(
                isinstance(t, ast.Attribute) and t.attr == snap.attr for t in n.targets)
            for n in subnodes(f.node))
        for frames in ctx.frames_by_name.values() for f in frames
        if f.node is not None and f.node is not where.frames[-1].node)


_STATE_GETTERS = frozenset({"get_rng_state", "get_rng_state_all", "getstate", "get_state"})


def _saved_before(call: ast.Call, fn: ast.AST | None) -> bool:
    """`saved = torch.get_rng_state(); evaluate(); torch.set_rng_state(saved)` in one function:
    the state put back is the one taken on the way in (isolation around an evaluation)."""
    if fn is None or not call.args or not isinstance(call.args[0], (ast.Name, ast.Attribute)):
        return False
    text = ast.unparse(call.args[0])
    for node in subnodes(fn):  # the save and a statement holding the restore share a block
        for block in (getattr(node, f, None) for f in ("body", "orelse", "finalbody")):
            if not isinstance(block, list):
                continue
            for i, stmt in enumerate(block):
                value = stmt.value if isinstance(stmt, ast.Assign) else None
                if isinstance(value, ast.IfExp):  # get_rng_state_all() if cuda else None
                    value = value.body
                if (isinstance(stmt, ast.Assign) and any(ast.unparse(t) == text
                                                         for t in stmt.targets)
                        and isinstance(value, ast.Call)
                        and last_attr(value.func) in _STATE_GETTERS
                        and any(call in subnodes(later) for later in block[i + 1:])):
                    return True
    return False


def _run_seed(expr: ast.expr) -> bool:
    """`self.cfg.train.seed`, `args.seed`: the run's one seed, the same on every call."""
    return isinstance(expr, (ast.Name, ast.Attribute)) and bool(re.search(
        r"(?i)seed$", last_attr(expr))) and not any(
        isinstance(n, (ast.Name, ast.Attribute)) and re.search(
            r"(?i)step|epoch|iter|idx|index|count|time|rank", last_attr(n))
        for n in subnodes(expr))


def _captured_in(fn: ast.AST | None, attr: str) -> bool:
    """`self.<attr> = ...` somewhere in `fn` (the context manager refreshes it itself)."""
    return fn is not None and any(
        isinstance(n, ast.Assign) and any(isinstance(t, ast.Attribute) and t.attr == attr
                                          for t in n.targets) for n in subnodes(fn))


def _after_yield(call: ast.Call, where: Where) -> str:
    """Name of the @contextmanager function when `call` runs after its `yield` (on exit)."""
    fn = where.frames[-1].node if where.frames else None
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or not any(
            last_attr(d.func if isinstance(d, ast.Call) else d) in (
                "contextmanager", "asynccontextmanager") for d in fn.decorator_list):
        return ""
    yields = [n.lineno for n in subnodes(fn) if isinstance(n, (ast.Yield, ast.YieldFrom))]
    return fn.name if yields and call.lineno > min(yields) else ""


_RNG_OBJECT = re.compile(r"(?i)^_?(r|rng|rs|random_state|randomstate|gen|generator|np_rng|"
                         r"\w+_rng|rng_\w+|\w+_generator|\w+_random_state)$")


def _generator_object(expr: ast.expr, ctx: Ctx) -> bool:
    """A torch generator: `torch.Generator()`, `torch.default_generator`, or a loop variable
    over `torch.cuda.default_generators`."""
    if isinstance(expr, ast.Attribute) and expr.attr == "default_generator":
        return True
    if not isinstance(expr, ast.Name):
        return False
    held = ctx.lookup(expr.id)
    source = ctx.loop_source(expr.id)
    return (isinstance(held, ast.Call) and last_attr(held.func) == "Generator") or (
        source is not None and "default_generators" in ast.unparse(source))


_EPISODE_METHOD = re.compile(r"^(reset|step|observation|action|reward|_?on_reset)$")
_SEEDABLE = re.compile(r"(?i)^(action_space|observation_space|env|np_random|_?\w*rng|"
                       r"_?random_state)$")


def _reseeded_per_episode(call: ast.Call, ctx: Ctx) -> str:
    """`self.env.action_space.seed(self._warmup_seed)` in a wrapper's `reset()`, or
    `self._noise_rng.seed(hash_of(obs))` in `observation()`: an env or generator reseeded on
    every episode or step from a value the caller did not pass (gymnasium's
    `reset(seed=seed)` passes its parameter through and stays quiet)."""
    func = call.func
    fn = ctx.frame.node
    if not (isinstance(func, ast.Attribute) and func.attr == "seed" and len(call.args) == 1
            and isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            and _EPISODE_METHOD.match(fn.name) and ctx.frame.cls is not None
            and _SEEDABLE.match(last_attr(func.value))):
        return ""
    if fn.name == "reset" and not any(re.search(r"Wrapper|Env$", b) and "Vec" not in b
                                      for b in ctx.frame.cls.bases):
        return ""  # a vectorised env's reset() runs once per run, not per episode
    params = _params(fn) - {"self"}
    if any(isinstance(n, ast.Name) and n.id in params for n in subnodes(call.args[0])):
        return ""  # reset(seed=...) handing its own argument on
    if literal(call.args[0]) is None:
        return ""
    return ast.unparse(func.value)[:40]


def _rng_object_seed(call: ast.Call) -> bool:
    """`self.R.seed(x)`, `rng.seed(x)`: reseeding a RandomState kept on an object."""
    func = call.func
    return (isinstance(func, ast.Attribute) and func.attr == "seed" and bool(call.args)
            and bool(_RNG_OBJECT.match(last_attr(func.value))))


_PER_BATCH = re.compile(r"(?i)^(sample|_sample\w*|draw\w*|get_batch|next_batch|negatives?|"
                        r"sample_negatives|__call__|collate\w*|forward|_?minibatch\w*|"
                        r"iter_batches|batches)$")
_VARYING = re.compile(r"(?i)idx|index|epoch|step|iter|count|calls?$|^i$|^j$|^k$|rng|random|time|"
                      r"pid|worker|rank|seed|offset|round|update|cycle|generation|episode")


_WORKER_AWARE = re.compile(r"(?i)worker|initial_seed|get_worker_info|idx|index|epoch|rank|"
                           r"pid|time")


def _worker_copies(call: ast.Call, ctx: Ctx) -> bool:
    """`self._rng = np.random.default_rng(self.seed)` in a dataset method other than
    `__init__` (lazily, inside the worker): each worker process holds a copy of the dataset
    and builds the same generator from the same seed."""
    frame = ctx.frame
    if not (frame.cls is not None and re.search(r"Dataset", " ".join((frame.cls.name,
                                                                      *frame.cls.bases)))
            and frame.name not in ("__init__", "set_epoch") and call.args
            and last_attr(call.func) in ("default_rng", "RandomState", "Random", "manual_seed")):
        return False
    body = frame.node if frame.node is not None else ast.Module(body=[], type_ignores=[])
    stored = any(isinstance(n, ast.Assign) and n.value is call and any(
        isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self"
        for t in n.targets) for n in subnodes(body)) or (
        isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Attribute)
        and isinstance(call.func.value.value, ast.Name) and call.func.value.value.id == "self")
    if not stored:  # a local generator for a schedule every rank must share is deliberate
        return False
    seed = call.args[0]
    return all(isinstance(n, (ast.Attribute, ast.Name, ast.Constant, ast.expr_context))
               for n in subnodes(seed)) and any(
        isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "self"
        for n in subnodes(seed)) and not _WORKER_AWARE.search(ast.unparse(seed))


def _may_dispatch_seeders(ctx: Ctx) -> bool:
    """A seeder table needs a seed function's name in the file (or a reversed string that
    normalize folds into one): without either, `self.x(...)` is not worth resolving."""
    return ctx.mentions("seed") or ctx.mentions("[::-1]")


def _dispatched_seeder(func: ast.Subscript, ctx: Ctx) -> str:
    """`_SEEDERS[backend](s)` with `_SEEDERS = {"python": random.seed, "torch":
    torch.manual_seed}`: every entry seeds a global RNG (the first one names the call)."""
    table = ctx.resolve(func.value)
    if not isinstance(table, ast.Dict) or not table.values:
        return ""
    quals = [_seeder_name(v, ctx) for v in table.values
             if not (isinstance(v, ast.Constant) and v.value is None)]  # ("off": None)
    return quals[0] or "" if quals and all(q in _SEED_FUNCS for q in quals) else ""


def _seeder_name(value: ast.expr, ctx: Ctx) -> str:
    """`torch.manual_seed`, `functools.partial(torch.manual_seed)`,
    `operator.attrgetter("cuda.manual_seed_all")(torch)` -> the function's dotted name."""
    if isinstance(value, ast.Call) and last_attr(value.func) == "partial" and value.args:
        value = value.args[0]
    if (isinstance(value, ast.Call) and isinstance(value.func, ast.Call)
            and last_attr(value.func.func) == "attrgetter" and len(value.func.args) == 1
            and isinstance(path := literal(value.func.args[0]), str) and len(value.args) == 1):
        owner = ctx.names.qualname(value.args[0])
        return f"{owner}.{path}" if owner else ""
    return ctx.names.qualname(value) or "" if isinstance(value, (ast.Attribute, ast.Name)) else ""


def _table_function(name: str, ctx: Ctx) -> str:
    """The seeding function a loop variable calls when the loop runs over a table of them:
    `for seed_fn in (random.seed, np.random.seed): seed_fn(s)`, `for n, (_, put) in
    STREAMS.items(): put(state)` with `STREAMS = {"torch": (get_rng_state, set_rng_state)}`."""
    table: ast.AST | None = ctx.loop_source(name)
    if isinstance(table, ast.Call) and last_attr(table.func) in ("items", "values"):
        table = table.func.value if isinstance(table.func, ast.Attribute) else None
    table = ctx.follow(table)  # a name, a parameter default, a self attribute, a constant
    if not isinstance(table, (ast.Tuple, ast.List, ast.Dict, ast.Set)):
        return ""
    quals = [ctx.names.qualname(n) or "" for n in subnodes(table)
             if isinstance(n, (ast.Attribute, ast.Name))]
    seeds = [q for q in quals if q in _SEED_FUNCS]
    sets = [q for q in seeds if "set" in q or "seed" in q.rsplit(".", 1)[-1]]
    return (sets or seeds or [""])[0]


def _reseeded_by_epoch(ctx: Ctx) -> bool:
    """The method also seeds from the epoch (`g.manual_seed(self.epoch + self.seed)`)."""
    fn = ctx.frame.node
    return fn is not None and any(
        isinstance(n, ast.Call) and last_attr(n.func) == "manual_seed" and _mentions_epoch(n)
        for n in subnodes(fn))


def _epoch_rewind(call: ast.Call, ctx: Ctx) -> bool:
    """A sampler's `__iter__` that reseeds unconditionally with a seed ignoring the epoch:
    the file has `set_epoch` (whose epoch the seed then ignores) or the seed is `self.seed`.
    First-use seeding (`if self.generator is None:`) and an epoch reseed stay quiet."""
    if ctx.frame.name != "__iter__" or _reseeded_by_epoch(ctx) or any(
            re.search(r"None|hasattr|^not |_?(gen|generator|rng)\b", ast.unparse(c))
            for c in ctx.conds):
        return False  # (`if self.shuffle:` still rewinds; a first-use test does not)
    seed = call.args[0]
    if _set_after_init({n.attr for n in subnodes(seed) if isinstance(n, ast.Attribute)}, ctx):
        return False
    return "set_epoch" in ctx.defs or (
        isinstance(seed, ast.Attribute) and isinstance(seed.value, ast.Name)
        and seed.value.id == "self")


_PER_ITEM = re.compile(r"(?i)^(__call__|__getitem__|__iter__|_?augment\w*|_?transform\w*|"
                       r"_?perturb\w*|_?jitter\w*|_?mask\w*|_?shuffle\w*|_?sample|_?draw\w*|"
                       r"_?crop\w*|_?mix\w*|_?add_noise\w*|(get_|iter_)?minibatch\w*)$")
_FIXED_ON_PURPOSE = re.compile(r"(?i)val|eval|test|fixed|determin|static|frozen")


_INDEX_PARAM = re.compile(r"(?i)^(idx|index|i|item|item_idx|sample_idx)$")


_EVAL_BRANCH = re.compile(r"(?i)\b(is_)?(val|valid|eval|test|determin|fixed)")


def _evaluation_branch(conds: list[ast.expr]) -> bool:
    """Code that runs only outside training (the else of `if self.train:`, `if split ==
    "val":`): a fixed per-item generator there is how evaluation stays repeatable."""
    for c in conds:
        test, holds = c, not hasattr(c, "guard_of")  # (after `if cond: return`, cond failed)
        while isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            test, holds = test.operand, not holds  # (also the else branch: `not test`)
        text = ast.unparse(test)
        if ("train" in text and not holds) or (holds and _EVAL_BRANCH.search(text)):
            return True
    return False


def _rebuilt_each_call(call: ast.Call, ctx: Ctx) -> str:
    """`rng = np.random.default_rng(self.seed)` inside `SpecAugment.__call__`, a dataset's
    `_augment` or a sampler's `__iter__`: a generator rebuilt from the same seed on every call
    (seeds with the index, epoch or a counter in them stay quiet; so do classes named for
    fixed evaluation)."""
    frame = ctx.frame
    made = ctx.names.call_name(call) in _GENERATOR_CLASSES or (
        isinstance(call.func, ast.Attribute) and call.func.attr == "manual_seed"
        and isinstance(made_by := (ctx.lookup(call.func.value.id) if isinstance(
            call.func.value, ast.Name) else call.func.value), ast.Call)
        and last_attr(made_by.func) == "Generator")  # torch.Generator().manual_seed(s), also
    # gen = torch.Generator(device=d); gen.manual_seed(s) in the same call
    if not (made and call.args and frame.cls
            and _PER_ITEM.match(frame.name) and not _FIXED_ON_PURPOSE.search(frame.cls.name)):
        return ""
    seed = call.args[0]
    if _evaluation_branch(ctx.conds):
        return ""  # `else: rng = RandomState(self.seed + idx)` after `if self.train:`
    if (isinstance(seed, ast.Name) and _INDEX_PARAM.match(seed.id)
            and any("train" in ast.unparse(c) for c in ctx.conds)):
        return seed.id  # default_rng(idx) in the training branch: one crop per item, forever
    keyed = _item_keyed(seed, ctx)
    if keyed:
        return keyed  # default_rng(self.seed + user) per __getitem__: one draw per item
    for n in subnodes(seed):
        if isinstance(n, ast.Name) and n.id != "self":
            return ""  # a parameter or local: seed + idx, seed_for(epoch)
        if isinstance(n, ast.Attribute) and (_COUNTER.search(n.attr) or _VARYING.search(
                n.attr.replace("seed", ""))):
            return ""  # self.seed + self.epoch
        if isinstance(n, ast.Call):
            return ""
    attrs = {n.attr for n in subnodes(seed) if isinstance(n, ast.Attribute)}
    if not attrs:
        return ""  # default_rng(0) literally: a deliberate constant
    if any(isinstance(c, ast.Compare) and isinstance(c.left, ast.Attribute)
           and c.left.attr in attrs and any(isinstance(o, ast.IsNot) for o in c.ops)
           for c in ctx.conds):
        return ""  # `if self.seed is not None:` a fixed-episode mode the caller opts into
    if _set_after_init(attrs, ctx):
        return ""  # set_epoch(): self.seed = base + epoch
    return ast.unparse(seed)[:30]


def _item_keyed(seed: ast.expr, ctx: Ctx) -> str:
    """`self.seed + user` in a training dataset's `__getitem__` (user = self.users[idx]): the
    generator is rebuilt from the item alone, so every epoch draws the same negatives, crops
    or masks for it. (Evaluation datasets fix their draws on purpose: their classes are
    named so; a class with set_epoch mixes the epoch in.)"""
    frame = ctx.frame
    if not (frame.name == "__getitem__" and isinstance(seed, ast.BinOp)
            and isinstance(seed.op, ast.Add) and frame.cls is not None
            and "set_epoch" not in ctx.defs and not re.search(
                r"(?i)val|eval|test|infer|predict|bench", frame.cls.name)):
        return ""
    sides = (seed.left, seed.right)
    base = [s for s in sides if isinstance(s, ast.Attribute) and isinstance(s.value, ast.Name)
            and s.value.id == "self" and "seed" in s.attr.lower()]
    item = [s for s in sides if isinstance(s, ast.Name)]
    if len(base) != 1 or len(item) != 1:
        return ""
    name = item[0].id
    fn = frame.node
    params = {a.arg for a in fn.args.args} if isinstance(fn, ast.FunctionDef) else set()
    if name in params and _INDEX_PARAM.match(name):
        return ast.unparse(seed)[:30]
    held = ctx.lookup(name)
    if (isinstance(held, ast.Subscript) and isinstance(held.slice, ast.Name)
            and held.slice.id in params):
        return ast.unparse(seed)[:30]  # user = self.users[idx]
    return ""


def _set_after_init(attrs: set[str], ctx: Ctx) -> bool:
    """One of `self.<attrs>` is assigned in a method of the current class other than
    `__init__` (`set_epoch(): self.seed = base + epoch`): the seed moves between calls."""
    cls = ctx.class_defs.get(ctx.frame.cls.name) if ctx.frame.cls else None
    return cls is not None and any(
        isinstance(method, ast.FunctionDef) and method.name != "__init__" and any(
            isinstance(t, ast.Attribute) and t.attr in attrs
            for n in subnodes(method) if isinstance(n, (ast.Assign, ast.AugAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]))
        for method in cls.body)


_DRAWS = frozenset({"sample", "choice", "choices", "shuffle", "randint", "permutation",
                    "randperm", "rand", "randn", "random", "uniform"})
_PER_ROUND = re.compile(r"(?i)select|sample|pick|choose|draw|next|batch|round|step|augment|"
                        r"shuffle|mask|negative|cohort|client|crop|noise|perturb")
"""Methods a loop calls again and again (a one-off experiment routine may seed itself)."""
_SETUP = re.compile(r"(?i)init|setup|set_up|seed|reset|configure|main|__enter__|start|"
                    r"prepare|build|make|create|load|restore|from_")


def _global_rewound_before_draw(call: ast.Call, ctx: Ctx) -> bool:
    """`random.seed(self.seed)` then `random.sample(...)` in `select_clients()`: a method
    that reseeds the process RNG to the same stored seed and draws right away returns the
    same draw on every call (start-up, reset and seeding methods stay quiet)."""
    fn = ctx.frame.node
    if not (isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and ctx.frame.cls
            and call.args and not _SETUP.search(fn.name) and _PER_ROUND.search(fn.name)
            and isinstance(seed := call.args[0], ast.Attribute)
            and root_name(seed) == "self"
            and "seed" in seed.attr.lower() and not _COUNTER.search(seed.attr)
            and not _uses(call, _params(fn) - {"self"})):
        return False
    if _set_after_init({seed.attr}, ctx):
        return False  # the seed moves between calls
    return bool(called_names(fn) & _DRAWS)


def _fixed_per_call(call: ast.Call, ctx: Ctx) -> bool:
    """`self.generator.manual_seed(self.seed)` inside `sample()`: the generator is rewound
    to the same seed for every batch (seeds with a counter, index or epoch stay quiet)."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "manual_seed"
            and call.args):
        return False
    fn = ctx.frame.node
    if ctx.frame.name == "__getitem__" and isinstance(fn, ast.FunctionDef) and len(
            fn.args.args) >= 2 and not _uses(call, _params(fn) - {"self"}) and all(
            isinstance(n, (ast.Attribute, ast.Name, ast.BinOp, ast.Constant, ast.operator))
            for n in subnodes(call.args[0])):  # gen.manual_seed(self.seed + self.epoch)
        return True  # per sample, a seed without the index: every sample draws the same
    if isinstance(fn, ast.FunctionDef) and any(
            last_attr(d) == "property" for d in fn.decorator_list) and all(
            isinstance(n, (ast.Attribute, ast.Name, ast.Constant, ast.BinOp, ast.operator,
                           ast.expr_context)) and not (
                isinstance(n, ast.Attribute) and _COUNTER.search(n.attr))
            for n in subnodes(call.args[0])):
        return True  # @property def generator(self): g.manual_seed(self.seed); return g
    if not (_PER_BATCH.match(ctx.frame.name) or _epoch_rewind(call, ctx)):
        return False
    geometry = {id(m) for n in subnodes(call.args[0]) if (
        isinstance(n, ast.Attribute) and n.attr == "shape") or (
        isinstance(n, ast.Call) and last_attr(n.func) in ("len", "size", "numel"))
        for m in subnodes(n)}  # seed + input_ids.shape[1]: the same for equal-length batches
    parts = [n for n in subnodes(call.args[0]) if isinstance(n, (ast.Name, ast.Attribute))
             and id(n) not in geometry]
    shapes = [n for n in parts if isinstance(n, ast.Name) and isinstance(
        bound := ctx.lookup(n.id), ast.expr) and any(
            (isinstance(m, ast.Attribute) and m.attr == "shape") or (
                isinstance(m, ast.Call) and last_attr(m.func) in ("len", "size", "numel"))
            for m in subnodes(bound))]  # T, n_freq = spec.shape; gen.manual_seed(T)
    sizes = [n for n in parts if isinstance(n, ast.Name) and n not in shapes
             and not _VARYING.search(n.id) and n.id != "self"
             and not isinstance(ctx.lookup(n.id), ast.Call)]  # n * num_minibatches
    if (shapes or sizes) and all(n in shapes or n in sizes or (
            (isinstance(n, ast.Attribute) and not _VARYING.search(n.attr)) or (
                isinstance(n, ast.Name) and n.id == "self")) for n in parts):
        return True  # a seed from sizes alone: the same numbers for every equal-size call
    return _seed_attrs_only(parts)


def _fallback_seed(call: ast.Call, fn: ast.AST | None) -> bool:
    """`def seed_all_rng(seed=None): if seed is None: seed = os.urandom(...)...; random.seed(
    seed)`: entropy only when no seed was given (and the seed is usually logged); a given
    seed is used as it is."""
    seed = call.args[0] if call.args else None
    names = {n.id for n in subnodes(seed) if isinstance(n, ast.Name)} if seed is not None else set()
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or not names or not (
            names & {a.arg for a in fn.args.args}):
        return False
    for node in subnodes(fn):
        if not isinstance(node, ast.If):
            continue
        tested = {n.id for n in subnodes(node.test) if isinstance(n, ast.Name)} & names
        missing = any(isinstance(n, ast.Compare) and any(
            (isinstance(op, ast.Is) and literal(c) is None) or (
                isinstance(op, (ast.Lt, ast.Eq)) and literal(c) in (0, -1))
            for op, c in zip(n.ops, n.comparators, strict=True)) for n in subnodes(node.test)) or (
            isinstance(node.test, ast.UnaryOp) and isinstance(node.test.op, ast.Not))
        if tested and missing and any(isinstance(t, ast.Name) and t.id in tested
                                      for stmt in node.body if isinstance(stmt, ast.Assign)
                                      for t in stmt.targets):
            return True
    return False


def _stale_set_epoch(call: ast.Call, ctx: Ctx) -> str:
    """`for epoch in range(start, n): sampler.set_epoch(args.start_epoch)`: the argument does
    not change with the loop (the text of the argument, else '')."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "set_epoch"
            and len(call.args) == 1):
        return ""
    loop = next((lp for lp in reversed(ctx.loops) if isinstance(lp, ast.For)
                 and isinstance(lp.target, ast.Name) and _COUNTER.search(lp.target.id)), None)
    if loop is None or not isinstance(loop.target, ast.Name):
        return ""
    counter = loop.target.id
    seen = {n.id for n in ctx.walk_values(call.args[0]) if isinstance(n, ast.Name)}
    if counter in seen or any(isinstance(n, ast.Call) for n in subnodes(call.args[0])):
        return ""
    assigned_in_loop = {t.id for n in subnodes(loop) if isinstance(n, (ast.Assign, ast.AugAssign))
                        for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                        if isinstance(t, ast.Name)}
    if seen & assigned_in_loop:
        return ""  # e = epoch + offset inside the loop; set_epoch(e)
    return ast.unparse(call.args[0])[:40]


def _seed_attrs_only(parts: Sequence[ast.expr]) -> bool:
    """`self.seed`, `self.noise_seed`, `SEED`: a seed that names a fixed setting only."""
    return all((isinstance(n, ast.Attribute) and re.search(r"(?i)seed", n.attr))
               or (isinstance(n, ast.Name) and n.id in ("self", "SEED"))
               for n in parts) and bool(parts)


_STEP_CALLERS = frozenset({"forward", "__call__", "training_step", "train_step", "step"})


def _reset_in_forward_helper(call: ast.Call, ctx: Ctx) -> Callable[[], bool] | None:
    """`self._gen.manual_seed(self.noise_seed)` in `reparameterize()`, which `forward()`
    calls: the noise is the same on every forward pass. Decided after the walk, when the
    callers are known (classes and methods named for fixed evaluation stay quiet)."""
    frame = ctx.frame
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "manual_seed"
            and len(call.args) == 1 and frame.cls is not None and frame.name != "__init__"
            and not ctx.conds  # (`if gen.device != p.device: gen = Generator(...)...`: a move)
            and not isinstance(call.func.value, ast.Call)
            and not _FIXED_ON_PURPOSE.search(frame.cls.name)
            and not _FIXED_ON_PURPOSE.search(frame.name) and not _set_after_init({
                n.attr for n in subnodes(call.args[0]) if isinstance(n, ast.Attribute)}, ctx)
            and _seed_attrs_only([n for n in subnodes(call.args[0])
                                  if isinstance(n, (ast.Name, ast.Attribute))])):
        return None
    name, cls = frame.name, frame.cls.name
    return lambda: any(caller in _STEP_CALLERS and cls in ctx.caller_classes.get(
        (name, caller), set()) for caller in ctx.callers.get(name, ()))


def _hash_of_sample(call: ast.Call, ctx: Ctx) -> bool:
    """The seed is a hash of something (`crc32(case_id.encode())`, `hash(path)`), and not of
    the epoch too (`hash((seed, self.epoch, idx))` changes every epoch)."""
    return any(isinstance(n, ast.Call) and (ctx.names.call_name(n).startswith(
        ("zlib.crc32", "zlib.adler32", "hashlib.", "binascii.crc32", "mmh3.")) or (
            isinstance(n.func, ast.Name) and n.func.id == "hash")) and not any(
        isinstance(m, (ast.Name, ast.Attribute)) and re.search(
            r"(?i)epoch|global_step|iteration", last_attr(m)) for m in subnodes(n))
        for a in call.args for n in ctx.walk_values(a))


def _shape_seed(seed: ast.expr) -> bool:
    """`cdf.shape[0] * n_samples`, `len(batch)`: a seed built from sizes only."""
    shapes = [n for n in subnodes(seed) if (isinstance(n, ast.Attribute) and n.attr == "shape")
              or (isinstance(n, ast.Call) and last_attr(n.func) in ("len", "size", "numel"))]
    inside = {id(m) for n in shapes for m in subnodes(n)}
    others = [n for n in subnodes(seed) if isinstance(n, (ast.Name, ast.Attribute))
              and id(n) not in inside]
    return bool(shapes) and all(isinstance(n, ast.Name) and not _VARYING.search(n.id)
                                for n in others)


def _mentions_seed(call: ast.Call) -> bool:
    """`self.seed + epoch` (a base seed the user chose), not the bare epoch number."""
    return any(isinstance(n, (ast.Name, ast.Attribute)) and "seed" in last_attr(n).lower()
               for a in call.args for n in subnodes(a))


def _given_model(frame: object) -> bool:
    """The evaluation is handed the model being trained (`validate(model, loader)`), not a
    stand-alone script that loads a checkpoint itself (`evaluate(ckpt)`: seeding there is its
    start-up)."""
    fn = getattr(frame, "node", None)
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    params = {a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)}
    loads = any(isinstance(n, ast.Call) and last_attr(n.func) in (
        "from_pretrained", "load", "load_state_dict", "load_checkpoint", "load_from_checkpoint")
        for n in subnodes(fn))
    return bool(params & {"model", "net", "module", "ema", "ema_model", "agent", "policy",
                          "self"}) and not loads


def _in_module_trainer(frame: object) -> bool:
    """An evaluation method of a trainer class (`Trainer.evaluate`)."""
    cls = getattr(frame, "cls", None)
    return cls is not None and bool(re.search(r"(?i)trainer|runner|engine|loop", cls.name))


def _reseeded_per_step(call: ast.Call, ctx: Ctx) -> str:
    """`for step, batch in enumerate(loader): torch.manual_seed(args.seed + epoch)`: the global
    RNG reset on every batch to a seed that stays the same for the whole epoch, so every step
    draws the same dropout masks and noise. Also `manual_seed(seed + step % k)`: a seed that
    cycles, so the random stream repeats every k steps."""
    if not call.args:
        return ""
    seed = call.args[0]
    for n in subnodes(seed):
        period = literal(n.right) if isinstance(n, ast.BinOp) else None
        if (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod)
                and re.search(r"(?i)step|^s$|iter|batch", ast.unparse(n.left))
                and (isinstance(n.right, (ast.Name, ast.Attribute, ast.Subscript)) or (
                    isinstance(period, int) and period < 100_000))):  # (s % 2**32: a range)
            return (f"seeded with {ast.unparse(seed)[:40]}: the seed cycles, so the same random "
                    "numbers come back every few steps")
    loop = ctx.loops[-1] if ctx.loops else None
    if not isinstance(loop, ast.For):
        return ""
    source = ast.unparse(loop.iter)
    if not batch_loop(loop):
        return ""
    varying = {n.id for n in subnodes(loop.target) if isinstance(n, ast.Name)} | {
        n.id for st in loop.body for n in subnodes(st)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    used = {n.id for n in subnodes(seed) if isinstance(n, ast.Name)} | {
        last_attr(n) for n in subnodes(seed) if isinstance(n, ast.Attribute)}
    if not used or used & varying or any(re.search(r"(?i)step|iter|batch|count", u)
                                         for u in used):
        return ""
    return (f"reseeded on every batch of the loop over {source[:30]} with "
            f"{ast.unparse(seed)[:40]}, which stays the same all epoch: every step draws the "
            "same random numbers")


def _mentions_epoch(call: ast.Call, ctx: Ctx | None = None) -> bool:
    """`np.random.seed(self.seed + epoch)` in set_epoch(): a new, reproducible seed per epoch
    (with `ctx`, also through a local: `seed = self.seed + 1000 * self.epoch`)."""
    def epochal(expr: ast.AST, depth: int) -> bool:
        for n in subnodes(expr):
            if isinstance(n, (ast.Name, ast.Attribute)) and "epoch" in last_attr(n).lower():
                return True
            if isinstance(n, ast.Name) and ctx is not None and depth < 2:
                value = ctx.lookup(n.id)
                if value is not None and epochal(value, depth + 1):
                    return True
        return False
    return any(epochal(a, 0) for a in call.args)


def _sampler_seed(call: ast.Call, ctx: Ctx) -> str:
    """How a DistributedSampler's `seed=` differs between ranks ('' when it does not): the
    sampler splits one permutation, so every rank must draw the same one."""
    seed = kwarg(call, "seed")
    if seed is None:
        return ""
    if _seed_source(ast.copy_location(ast.Call(func=call.func, args=[seed], keywords=[]),
                                      call), ctx) == "entropy":
        return "from time/pid/urandom"
    if triggers.RANK in ctx.classify(seed):
        return "from the rank"
    return ""


_ENTROPY_SEEDERS = frozenset({"torch.seed", "torch.random.seed", "torch.cuda.seed",
                              "torch.cuda.seed_all", "torch.cuda.random.seed",
                              "torch.cuda.random.seed_all"})
"""Seed from a non-deterministic number chosen by torch itself."""


def _seed_source(call: ast.Call, ctx: Ctx) -> str:
    """'entropy' when the seed comes from time/pid/urandom, '' otherwise."""
    if ctx.names.call_name(call) in _ENTROPY_SEEDERS:
        return "entropy"
    for value in [*call.args, *(kw.value for kw in call.keywords)]:
        for node in ctx.walk_values(value, methods=True):  # `stamp = int(time.time())`, and
            # `self._epoch_seed(e)` returning `hash((self.seed, e, os.getpid()))`
            if isinstance(node, ast.Call) and ctx.names.call_name(node).startswith(_ENTROPY) \
                    and not _seeded_generator(node, ctx):
                return "entropy"
        kinds = ctx.classify(value)
        if kinds & {triggers.HOST, triggers.USER, triggers.TIME}:
            return "entropy"  # seeded from the hostname/user/date: differs per machine
        if _cyclic(value):
            return "cyclic"
        if any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "hash"
               and n.args and not isinstance(n.args[0], ast.Constant) for n in subnodes(value)):
            return "hashed"  # manual_seed_all(hash(prompt) & 0x7FFFFFFF)
    return ""


_GENERATOR_CLASSES = frozenset({"numpy.random.default_rng", "numpy.random.RandomState",
                                "numpy.random.Generator", "random.Random",
                                "numpy.random.SeedSequence"})
_STARTUP_HOOK = re.compile(r"^(on_fit_start|setup|on_train_start|on_train_begin|"
                           r"on_pretrain_routine_start|on_init_end)$")
"""Callbacks that run once before training: seeding there with a given seed is start-up."""
_RESTORE_HOOK = re.compile(r"(?i)load|restore|resume|state_dict|setup|fit_start|train_start|"
                           r"train_begin")
_COUNTER = re.compile(r"(?i)step|iter|epoch|batch")


def _fixed_in_counter_loop(call: ast.Call, where: Where) -> str:
    """The loop variable (`epoch`) of an enclosing epoch/step loop that the seed ignores, or
    reads only through a comparison (`seed + (epoch > 0)` is the same from epoch 1 on)."""
    if not call.args:
        return ""
    for loop in reversed(where.loops):
        if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Name)
                and _COUNTER.search(loop.target.id)):
            continue
        counter = loop.target.id
        compared = {id(n) for c in subnodes(call) if isinstance(c, ast.Compare)
                    for n in subnodes(c)}
        varies = any(isinstance(n, ast.Name) and n.id == counter and id(n) not in compared
                     for a in call.args for n in subnodes(a))
        return "" if varies else counter
    return ""


def _step_seed_each_epoch(call: ast.Call, where: Where) -> str:
    """`for step, batch in enumerate(loader): torch.manual_seed(args.seed + step)` inside an
    epoch (an `epoch` parameter or loop): the seed restarts with the step count every epoch,
    so every epoch replays the same dropout and augmentation draws. (`global_step` or the
    epoch in the seed make it advance.)"""
    if not call.args or not where.loops:
        return ""
    loop = where.loops[-1]
    if not (isinstance(loop, ast.For) and isinstance(loop.target, ast.Tuple) and loop.target.elts
            and isinstance(index := loop.target.elts[0], ast.Name)
            and isinstance(loop.iter, ast.Call) and last_attr(loop.iter.func) == "enumerate"):
        return ""
    used = {last_attr(n) for a in call.args for n in subnodes(a)
            if isinstance(n, (ast.Name, ast.Attribute))}
    if index.id not in used or any(re.search(r"(?i)epoch|global|total", u) for u in used):
        return ""
    fn = where.frames[-1].node if where.frames else None
    epoch_param = isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
        "epoch" in a.arg for a in fn.args.args)
    epoch_loop = any(isinstance(lp, ast.For) and "epoch" in ast.unparse(lp.target)
                     for lp in where.loops[:-1])
    return index.id if epoch_param or epoch_loop else ""


_EPOCH_START = re.compile(r"(?i)^(__iter__|set_epoch|on_(train_)?epoch_(start|begin))$")


def _replayed_state(call: ast.Call, ctx: Ctx) -> str:
    """`self.g.set_state(self._state)` in a sampler's __iter__ or an epoch-start hook, with the
    state saved once and kept: each epoch starts from the same RNG state. (A resume state that
    is cleared after use, `self._resume = None`, is restored only once.)"""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr in (
            "set_state", "set_rng_state", "setstate") and len(call.args) == 1):
        return ""
    saved = call.args[0]
    fn = ctx.frame.node
    once = _taken_at_construction(saved, ctx)
    if once:
        return (f"{ast.unparse(call.func)[:40]}() in {ctx.frame.name}() restores the state "
                f"taken once in __init__ (self.{once}): every call replays the same random "
                "draws")
    if isinstance(saved, ast.Name) and (epochs := _restored_each_epoch(saved, ctx)):
        return (f"{ast.unparse(call.func)[:40]}({saved.id}) inside the loop over {epochs} "
                "restores the state saved before the loop: every epoch replays the same "
                "shuffle and random draws")
    if isinstance(saved, ast.Name) and isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return _repeated_draw(call, saved, fn, ctx)
    if not (isinstance(saved, ast.Attribute) and isinstance(saved.value, ast.Name)
            and saved.value.id == "self" and _EPOCH_START.match(ctx.frame.name)
            and isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))):
        return ""
    for n in subnodes(fn):
        if isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign)) and n.lineno > call.lineno:
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            if any(isinstance(t, ast.Attribute) and t.attr == saved.attr for t in targets):
                return ""  # consumed or refreshed after the restore
    return (f"{ast.unparse(call.func)[:40]}(self.{saved.attr}) in {ctx.frame.name}() restores a "
            "state saved once: every epoch replays the same shuffle and random draws")


_RNG_MAKERS = frozenset({"random.Random", "numpy.random.default_rng", "numpy.random.RandomState"})
"""Generators made with a seed (a seeded generator per call repeats its draws like a reseed)."""


def _restored_each_epoch(saved: ast.Name, ctx: Ctx) -> str:
    """The epoch loop variable when `saved` holds a `get_state()` taken before the loop the
    restore sits in, and the loop never takes a new one."""
    held = ctx.lookup(saved.id)
    loop = next((lp for lp in reversed(ctx.loops) if isinstance(lp, ast.For)), None)
    if not (isinstance(held, ast.Call) and last_attr(held.func) in (
            "get_state", "get_rng_state", "getstate") and loop is not None
            and isinstance(loop.target, ast.Name) and re.search(r"(?i)epoch", loop.target.id)
            and held.lineno < loop.lineno):
        return ""
    for n in subnodes(loop):
        if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == saved.id
                                             for t in n.targets):
            return ""
    return loop.target.id


_REPLAY_ON_PURPOSE = re.compile(r"^__(a?enter|a?exit)__$|(?i:restore|replay|reset|rewind)")


def _taken_at_construction(saved: ast.expr, ctx: Ctx) -> str:
    """`self._snap = (random.getstate(), torch.get_rng_state())` in __init__, then
    `torch.set_rng_state(self._snap[1])` (also through `a, b = self._snap`) in another
    method: the attribute is never refreshed, so every restore goes back to the start."""
    if isinstance(saved, ast.Name) and ctx.frame.node is not None:
        name = saved.id  # py_state, torch_state = self._snap
        saved = ctx.lookup(name) or next((
            n.value for n in subnodes(ctx.frame.node) if isinstance(n, ast.Assign)
            and any(isinstance(t, ast.Tuple) and any(isinstance(e, ast.Name) and e.id == name
                                                     for e in t.elts) for t in n.targets)),
            saved)
    if isinstance(saved, ast.Subscript):
        saved = saved.value
    cls = ctx.frame.cls
    if not (isinstance(saved, ast.Attribute) and isinstance(saved.value, ast.Name)
            and saved.value.id == "self" and cls is not None and ctx.frame.name not in (
                "__init__", "load_state_dict", "set_state", "__setstate__")
            and not _REPLAY_ON_PURPOSE.search(ctx.frame.name)):
        return ""  # (a `with RandContext():` replays on purpose: activation recomputation)
    cdef = ctx.class_defs.get(cls.name)
    if cdef is None:
        return ""
    writes = [(fn.name, n) for fn in cdef.body if isinstance(fn, ast.FunctionDef)
              for n in subnodes(fn) if isinstance(n, (ast.Assign, ast.AugAssign))
              and any(isinstance(t, ast.Attribute) and t.attr == saved.attr and isinstance(
                  t.value, ast.Name) and t.value.id == "self" for t in (
                  n.targets if isinstance(n, ast.Assign) else [n.target]))]
    if writes and all(name == "__init__" for name, _ in writes) and any(
            isinstance(m, ast.Call) and last_attr(m.func) in _STATE_GETTERS
            for _, n in writes for m in subnodes(n)):
        return saved.attr
    return ""


def _same_seed_each_call(seed: ast.expr, ctx: Ctx) -> bool:
    """`self.seed`, `0`, `cfg.seed`: a global seed that is the same on every call (no argument or
    counter of the call in it)."""
    fn = ctx.frame.node
    params = {a.arg for a in fn.args.args[1:]} if isinstance(
        fn, (ast.FunctionDef, ast.AsyncFunctionDef)) else set()
    for node in subnodes(seed):
        if isinstance(node, ast.Name) and (node.id in params or ctx.lookup(node.id) is not None):
            return False  # __call__(self, idx): seed + idx; a local computed in the call
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and (
                node.value.id == "self" and _COUNTER.search(node.attr)):
            return False  # self.seed + self.epoch
        if isinstance(node, ast.Call):
            return False
    return True


def _sample_property(seed: ast.expr, ctx: Ctx) -> str:
    """`g.num_nodes`, `len(x)`, `img.shape[0]`: a property of the sample passed in, which many
    samples share (the sample's index would be its own seed; this is not)."""
    fn = ctx.frame.node
    params = {a.arg for a in fn.args.args[1:]} if isinstance(
        fn, (ast.FunctionDef, ast.AsyncFunctionDef)) else set()
    params -= {p for p in params if re.search(r"(?i)idx|index|seed|worker|rank|epoch|step|^i$",
                                              p)}
    for node in subnodes(seed):
        if isinstance(node, ast.Name) and node.id not in params and node.id != "len" and (
                ctx.lookup(node.id) is not None or node.id in {a.arg for a in getattr(
                    getattr(fn, "args", None), "args", [])}):
            return ""  # also seeded from an index or a counter
    for node in subnodes(seed):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in params):
            return ast.unparse(node)[:30]
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "len" and node.args and isinstance(node.args[0], ast.Name)
                and node.args[0].id in params):
            return ast.unparse(node)[:30]
    return ""


def _repeated_draw(call: ast.Call, saved: ast.Name, fn: ast.AST, ctx: Ctx) -> str:
    """`state = torch.get_rng_state(); v1 = aug(img); torch.set_rng_state(state); v2 =
    aug(img)`: the same random call runs again from the same state, so it draws the same
    numbers (two "random" views are one). Restoring at the end, to leave the global RNG as it
    was, repeats nothing."""
    held = ctx.lookup(saved.id)
    if not (isinstance(held, ast.Call) and last_attr(held.func) in _STATE_GETTERS):
        return ""
    start = getattr(held, "lineno", 0)
    block = next((b for n in subnodes(fn) for f in ("body", "orelse", "finalbody")
                  if isinstance(b := getattr(n, f, None), list)
                  and any(isinstance(st, ast.Expr) and st.value is call for st in b)), None)
    if block is None or not any(st.lineno == start for st in block):
        return ""  # (the save, the draws and the restore are statements of one block)
    calls = [n for st in block for n in subnodes(st) if isinstance(n, ast.Call)
             and n is not call
             and not last_attr(n.func).startswith(("get_", "set_", "getstate", "setstate"))]
    before = {ast.dump(n): n.lineno for n in calls if start < n.lineno < call.lineno}
    again = next((n for n in calls if n.lineno > call.lineno and ast.dump(n) in before), None)
    if again is None:
        return ""
    return (f"{ast.unparse(call.func)[:40]}({saved.id}) rewinds the RNG between two runs of "
            f"{ast.unparse(again)[:40]} (lines {before[ast.dump(again)]} and {again.lineno}): "
            "both draw the same random numbers")


def _counter_gate(cond: ast.expr) -> bool:
    """`step > 10_000`, `epoch >= 30`: a condition that turns true part-way through training."""
    for node in subnodes(cond):
        if (isinstance(node, ast.Compare) and len(node.ops) == 1
                and isinstance(node.ops[0], (ast.Gt, ast.GtE))):
            number = literal(node.comparators[0])
            if (isinstance(number, (int, float)) and number > 0 and isinstance(
                    node.left, (ast.Name, ast.Attribute)) and _COUNTER.search(
                    last_attr(node.left))):
                return True
    return False


def _cyclic(value: ast.expr) -> bool:
    """`step // 1000`, `epoch % 2`: the seed repeats, so the random stream is replayed.
    (`torch.initial_seed() % 2**32` in worker_init_fn is the recipe: no counter, huge modulus.)"""
    for node in subnodes(value):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.FloorDiv, ast.Mod)):
            right = literal(node.right)
            # a small literal, or a configured period (`step // self.every`)
            small = (isinstance(right, int) and 1 < right < 100_000) or isinstance(
                node.right, (ast.Name, ast.Attribute))
            if small and any(_COUNTER.search(last_attr(n)) for n in subnodes(node.left)
                             if isinstance(n, (ast.Name, ast.Attribute))):
                return True
    return False


def _call_counter_cycle(call: ast.Call, ctx: Ctx) -> str:
    """`self.calls += 1; ...; self.gen.manual_seed(self.calls // 2000)` (or `seed + (self._calls
    & 1)`): a counter the method bumps on every call, folded into a few repeating seeds."""
    fn = ctx.frame.node
    if not (isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and call.args):
        return ""
    bumped = {ast.unparse(n.target) for n in subnodes(fn) if isinstance(n, ast.AugAssign)
              and isinstance(n.op, ast.Add) and isinstance(n.target, ast.Attribute)}
    if ast.unparse(call.args[0]) in bumped:
        return ast.unparse(call.args[0])  # manual_seed(self.calls): seeds 1, 2, 3... every run
    for n in subnodes(call.args[0]):
        if (isinstance(n, ast.BinOp) and isinstance(n.op, (ast.FloorDiv, ast.Mod, ast.BitAnd))
                and ast.unparse(n.left) in bumped):
            return ast.unparse(n.left)
    return ""


_GENERATORS = frozenset({"RandomState", "default_rng", "SeedSequence", "Generator", "PCG64",
                         "Random", "Philox", "MT19937"})


def _seeded_generator(call: ast.Call, ctx: Ctx) -> bool:
    """`np.random.RandomState(self._seed)`, `np.random.SeedSequence([base, rank])`: an RNG object
    built from a given seed is deterministic, not entropy."""
    return last_attr(call.func) in _GENERATORS and bool(call.args or call.keywords)


def _uses(call: ast.Call, names: set[str]) -> bool:
    for value in [*call.args, *(kw.value for kw in call.keywords)]:
        for node in subnodes(value):
            if isinstance(node, ast.Name) and node.id in names:
                return True
    return False


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    args = fn.args
    return {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)} - {"self"}


def _loop_names(loop: ast.For | ast.While) -> set[str]:
    if isinstance(loop, ast.For):
        return {n.id for n in subnodes(loop.target) if isinstance(n, ast.Name)}
    return set()


class HiddenReseed(Check):
    """Seed calls, and calls of this file's own seeding helpers (a function that passes one of
    its parameters to a seed call): those are judged at the call site, with its context."""

    rules = (HIDDEN_RESEED,)

    def __init__(self) -> None:
        self._helpers: dict[str, str] = {}
        self._seed_nodes: dict[str, ast.Call] = {}
        self._calls: list[tuple[ast.Call, Where, str]] = []
        self._worker_seeded: dict[int, bool] = {}

    def visit_Module(self, node: ast.Module, ctx: Ctx) -> None:
        helpers: dict[str, str] = {}
        calls: list[tuple[ast.Call, Where, str]] = []
        self._helpers, self._calls = helpers, calls  # per file
        self._seed_nodes = {}
        self._worker_seeded = {}
        ctx.defer(lambda: self._call_sites(ctx, helpers, calls))

    def _call_sites(self, ctx: Ctx, helpers: dict[str, str],
                    calls: list[tuple[ast.Call, Where, str]]) -> None:
        reported: set[str] = set()
        for call, where, callee in calls:
            if callee in helpers and not any(f.name == callee for f in where.frames):
                label = f"{callee}(...) calling {helpers[callee]}"
                before = len(ctx.findings)
                self._decide(call, ctx, where, label, _seed_source(call, ctx), label=True)
                seed = self._seed_nodes.get(callee)
                if (len(ctx.findings) > before and seed is not None and callee not in reported
                        and "seed" not in callee.lower()
                        and any(r == DATA for r, _ in ctx.roles(where))):
                    # A data method that seeds (`_load_block`): point at its seed call too. A
                    # seeding helper (`set_all_seeds`) is fine at start-up; only the call is not.
                    reported.add(callee)
                    ctx.report(HIDDEN_RESEED, seed, f"{helpers[callee]}() in {callee}(), which "
                               f"is called from data loading or a hook (line {call.lineno})",
                               severity=ctx.findings[before].severity)

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        name = ctx.names.call_name(node)
        func = node.func
        stale = _stale_set_epoch(node, ctx)
        if stale:
            ctx.report(HIDDEN_RESEED, node, f"set_epoch() given {stale} inside the loop over "
                       "epochs: the sampler shuffles the same way every epoch",
                       severity=Severity.MEDIUM)
            return
        if (ctx.frame.name == "__call__" and name in _SEED_FUNCS and "state" not in name
                and node.args
                and ctx.frame.cls is not None and _same_seed_each_call(node.args[0], ctx)):
            ctx.report(HIDDEN_RESEED, node, f"{name}() with a fixed seed inside "
                       f"{ctx.frame.cls.name}.__call__(): every call resets the global RNG to "
                       "the same state, so each call draws the same numbers (and so does "
                       "whatever runs after it)", severity=Severity.MEDIUM)
            return
        if (ctx.frame.name == "__call__" and (name in _SEED_FUNCS or name in _RNG_MAKERS)
                and "state" not in name and node.args and ctx.frame.cls is not None
                and (prop := _sample_property(node.args[0], ctx))):
            tail = ", and the global RNG restarts for everything after it" if (
                name in _SEED_FUNCS) else ""
            ctx.report(HIDDEN_RESEED, node, f"{name}() seeded from {prop} inside "
                       f"{ctx.frame.cls.name}.__call__(): every sample that shares it gets the "
                       f"same random draws{tail}", severity=Severity.MEDIUM)
            return
        replayed = _replayed_state(node, ctx)
        if replayed:
            ctx.report(HIDDEN_RESEED, node, replayed, severity=Severity.MEDIUM)
            return
        if name in ("atexit.register", "weakref.finalize") and node.args:
            seeder = node.args[1 if name == "weakref.finalize" else 0]
            qual = ctx.names.qualname(seeder) if isinstance(seeder, (ast.Name,
                                                                     ast.Attribute)) else ""
            if qual in _SEED_FUNCS:
                ctx.report(HIDDEN_RESEED, node, f"{qual}() registered to run at exit: the RNG "
                           "is reseeded while the process shuts down (threads, loaders and "
                           "later handlers still draw from it)", severity=Severity.MEDIUM)
                return
        if (isinstance(func, ast.Attribute) and func.attr == "seed" and not node.args
                and not node.keywords and _generator_object(func.value, ctx)):
            where = ctx.where()

            def fresh() -> None:  # gen.seed(): a new seed from OS entropy, inside a hook
                roles = ctx.roles(where)
                if roles:
                    ctx.report(HIDDEN_RESEED, node, f"{ast.unparse(func)[:40]}() draws a fresh "
                               f"non-deterministic seed inside {ctx.describe_roles(roles)}: the "
                               "run cannot be reproduced", severity=Severity.HIGH)
            ctx.defer(fresh)
            return
        if last_attr(func) == "DistributedSampler" and (why := _sampler_seed(node, ctx)):
            ctx.report(HIDDEN_RESEED, kwarg(node, "seed") or node, f"DistributedSampler "
                       f"seeded {why}: every rank "
                       "shuffles differently, so ranks train on overlapping samples and never "
                       "see others", severity=Severity.MEDIUM)
            return
        if isinstance(func, ast.Attribute) and func.attr == "reset" and any(
                k.arg == "seed" for k in node.keywords) and _seed_source(node, ctx) == "entropy":
            ctx.report(HIDDEN_RESEED, node, f"{ast.unparse(func)[:40]}(seed=...) from "
                       "time/pid/urandom: every episode starts from an irreproducible state",
                       severity=Severity.MEDIUM)  # env.reset(seed=os.getpid() ^ time_ns())
            return
        if isinstance(func, ast.Name) and name not in _SEED_FUNCS:
            name = _table_function(func.id, ctx) or name  # for seed_fn in SEEDERS: seed_fn(s)
        if isinstance(func, ast.Subscript) and not name:
            name = _dispatched_seeder(func, ctx)  # _SEEDERS[name](stamp)
        if (name not in _SEED_FUNCS and isinstance(func, ast.Attribute) and isinstance(
                func.value, ast.Name)
                and func.value.id == "self" and _may_dispatch_seeders(ctx) and isinstance(
                    held := ctx.resolve(func), ast.Subscript)):
            name = _dispatched_seeder(held, ctx) or name  # self.fn(s), self.fn = _SEEDERS[m]
        if name in _JAX_KEYS and _seed_source(node, ctx) == "entropy":
            ctx.report(HIDDEN_RESEED, node, f"{name}() derives a JAX key from time/pid/urandom: "
                       "the run cannot be reproduced from its seed", severity=Severity.MEDIUM)
            return
        if node.args and (isinstance(func, ast.Name) or (
                isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                and func.value.id == "self")) and name not in _SEED_FUNCS:
            self._calls.append((node, ctx.where(), last_attr(func)))
        episodic = _reseeded_per_episode(node, ctx)
        if episodic:
            ctx.report(HIDDEN_RESEED, node, f"{episodic} reseeded in "
                       f"{ctx.frame.cls.name if ctx.frame.cls else ''}.{ctx.frame.name}() "
                       "with a stored or derived seed: every episode (or step) replays the same "
                       "random draws", severity=Severity.MEDIUM)
            return
        if (last_attr(node.func) == "manual_seed" and name not in _SEED_FUNCS) or (
                name in _GENERATOR_CLASSES and node.args) or _rng_object_seed(node):
            self._generator(node, ctx)  # g.manual_seed(...), np.random.default_rng(seed)
            return
        if name not in _SEED_FUNCS and last_attr(node.func) not in _SEED_HELPERS:
            return
        frame = ctx.frame
        # Helpers that seed from a parameter; restoring a saved RNG state is not seeding.
        if isinstance(frame.node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _uses(
                node, _params(frame.node)) and "state" not in name.lower():
            self._helpers.setdefault(frame.name, name or last_attr(node.func))
            self._seed_nodes.setdefault(frame.name, node)
        if name in _SEED_FUNCS and _global_rewound_before_draw(node, ctx):
            ctx.report(HIDDEN_RESEED, node, f"{name}({ast.unparse(node.args[0])[:30]}) at the "
                       f"start of {ctx.frame.name}(), right before it draws: every call "
                       "draws the same numbers (the same picks each round or batch)",
                       severity=Severity.MEDIUM)
            return
        per_step = _reseeded_per_step(node, ctx) if name in _SEED_FUNCS else ""
        if per_step:
            ctx.report(HIDDEN_RESEED, node, f"{name}() {per_step}", severity=Severity.MEDIUM)
            return
        if last_attr(node.func) in _SEED_HELPERS and not name.startswith(
                ("lightning", "pytorch_lightning", "transformers", "accelerate", "lightning_fab",
                 "tensorflow", "keras", "tf.")):
            return  # a project's own set_seed(args.seed) helper
        where = ctx.where()
        source = _seed_source(node, ctx)
        self._worker_seeded[id(node)] = _from_worker_seed(node, ctx)  # names resolve only now
        ctx.defer(lambda: self._decide(node, ctx, where, name, source))

    def _generator(self, node: ast.Call, ctx: Ctx) -> None:
        """`g.manual_seed(seed + epoch)` on a torch.Generator is how samplers shuffle
        reproducibly (DistributedSampler); seeding one from time/pid/urandom is not."""
        where = ctx.where()
        fn = ctx.frame.node
        if (ctx.frame.name == "set_epoch" and isinstance(fn, (ast.FunctionDef,
                                                               ast.AsyncFunctionDef))
                and node.args and not _uses(node, _params(fn) - {"self"})
                and not any(isinstance(n, ast.Attribute) and "epoch" in n.attr
                            for n in subnodes(node.args[0]))):
            ctx.report(HIDDEN_RESEED, node, f"generator {ast.unparse(node.func)[:60]}() reset in "
                       "set_epoch() with a seed that ignores the epoch: every epoch replays "
                       "the same shuffle", severity=Severity.MEDIUM)
            return
        if _worker_copies(node, ctx):
            ctx.report(HIDDEN_RESEED, node, f"{ast.unparse(node.func)[:60]}() built from a fixed "
                       f"seed inside {ctx.frame.name}() of a dataset: every DataLoader worker "
                       "makes the same generator and draws the same samples",
                       severity=Severity.MEDIUM)
            return
        if (ctx.names.call_name(node) in _GENERATOR_CLASSES and node.args
                and not _mentions_epoch(node, ctx) and _epoch_rewind(node, ctx)):
            ctx.report(HIDDEN_RESEED, node, f"{ctx.names.call_name(node)}() built from a seed "
                       "without the epoch in "
                       f"{ctx.frame.cls.name if ctx.frame.cls else ''}.__iter__(): every epoch "
                       "replays the same order", severity=Severity.MEDIUM)
            return
        rebuilt = _rebuilt_each_call(node, ctx)
        if rebuilt:
            ctx.report(HIDDEN_RESEED, node, f"{ctx.names.call_name(node)}({rebuilt}) built anew "
                       f"in {ctx.frame.cls.name if ctx.frame.cls else ''}.{ctx.frame.name}() "
                       "from a fixed seed: every call (for the same item) draws the same "
                       "numbers, so the masks, crops or negatives repeat every epoch",
                       severity=Severity.MEDIUM)
            return
        if _fixed_per_call(node, ctx):
            ctx.report(HIDDEN_RESEED, node, f"generator {ast.unparse(node.func)[:60]}() reset to "
                       f"a fixed seed at every {ctx.frame.name}() call: each call draws the same "
                       "numbers", severity=Severity.MEDIUM)
            return
        if _hash_of_sample(node, ctx):
            def per_sample() -> None:
                roles = [r for r in ctx.roles(where) if r[0] == DATA]
                if roles:
                    ctx.report(HIDDEN_RESEED, node, f"generator {ast.unparse(node.func)[:60]}() "
                               "reseeded from a hash of the sample inside "
                               f"{ctx.describe_roles(roles)}: each sample gets the same random "
                               "crop/augmentation every epoch", severity=Severity.MEDIUM)
            ctx.defer(per_sample)
            return
        fresh = isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Call) and (
            last_attr(node.func.value.func) == "Generator")  # a new generator, not a reset one
        loop = "" if fresh else _fixed_in_counter_loop(node, where)
        if loop and _seed_source(node, ctx) != "entropy":
            ctx.report(HIDDEN_RESEED, node, f"generator {ast.unparse(node.func)[:60]}() reset "
                       f"inside the loop over {loop} with a seed that ignores {loop}: every "
                       "epoch replays the same shuffle and augmentations",
                       severity=Severity.MEDIUM)
            return
        fn = ctx.frame.node
        if (isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.args
                and isinstance(call_arg := node.args[0], ast.Attribute)
                and isinstance(call_arg.value, ast.Name) and call_arg.value.id == "self"
                and fn.name not in ("__init__", "set_epoch", "seed", "set_seed")
                and ctx.flow.called_in_loop(fn.name)):  # reset(): gen.manual_seed(self.seed)
            ctx.report(HIDDEN_RESEED, node, f"generator {ast.unparse(node.func)[:60]}() reset to "
                       f"{ast.unparse(call_arg)} in {fn.name}(), which the file calls from a loop: "
                       "every call replays the same random numbers", severity=Severity.MEDIUM)
            return
        if (node.args and _shape_seed(node.args[0]) and ctx.frame.node is not None
                and not re.search(r"(?i)init|setup|seed|config|main", ctx.frame.name)):
            ctx.report(HIDDEN_RESEED, node, f"generator {ast.unparse(node.func)[:60]}() reseeded "
                       f"from tensor sizes inside {ctx.frame.name}(): every call with the same "
                       "shapes replays the same random numbers", severity=Severity.MEDIUM)
            return
        counter = _call_counter_cycle(node, ctx)
        if counter:
            ctx.report(HIDDEN_RESEED, node, f"generator {ast.unparse(node.func)[:60]}() reseeded "
                       f"from {counter}, a count of this method's calls: the same seeds come "
                       "back (every epoch and run) and the random stream repeats",
                       severity=Severity.MEDIUM)
            return
        in_forward = _reset_in_forward_helper(node, ctx)
        if in_forward is not None:
            helper = ctx.frame.name
            ctx.defer(lambda: ctx.report(
                HIDDEN_RESEED, node, f"generator {ast.unparse(node.func)[:60]}() reset to a "
                f"fixed seed in {helper}(), which forward() calls: every pass draws the same "
                "noise", severity=Severity.MEDIUM) if in_forward() else None)
            return
        if _seed_source(node, ctx) != "entropy":
            return

        def decide() -> None:
            roles = ctx.roles(where)  # in worker_init_fn too: the recipe uses initial_seed()
            inside = f" inside {ctx.describe_roles(roles)}" if roles else ""
            ctx.report(HIDDEN_RESEED, node, f"generator {ast.unparse(node.func)[:60]}() seeded "
                       f"from time/pid/urandom{inside}: the run cannot be reproduced",
                       severity=Severity.HIGH if roles else Severity.MEDIUM)
        ctx.defer(decide)

    def _decide(self, node: ast.Call, ctx: Ctx, where: Where, name: str, source: str,
                label: bool = False) -> None:
        short = name if label else name or last_attr(node.func)
        if any("fork_rng" in w for w in where.withs):
            return  # inside `with torch.random.fork_rng():` the outer RNG is restored after
        fn = where.frames[-1].node if where.frames else None
        if fn is not None and "state" not in (name or "").lower() and node.args and (
                re.search(r"(?i)valid|eval|test", where.frames[-1].name)) and not source and any(
                isinstance(n, ast.Call) and last_attr(n.func) in _STATE_GETTERS
                and getattr(n, "lineno", 0) < getattr(node, "lineno", 0) for n in subnodes(fn)):
            return  # state saved just before a fixed validation seed (restored at the end)
        kinds = ctx.trigger_kinds(where)
        roles = ctx.roles(where)
        strong = kinds & triggers.STRONG
        if not strong and _saved_before(node, fn):
            kinds -= {triggers.RANK}  # the state taken on the way in, put back on the way out
        if strong or triggers.RANK in kinds:
            sev = Severity.HIGH if strong else Severity.MEDIUM
            ctx.report(HIDDEN_RESEED, node, f"{short}() runs only under a condition on "
                       f"{triggers.describe(kinds)}: a conditional reseed changes or breaks "
                       "training", severity=sev)
            return
        if (name.startswith(("torch.manual_seed", "torch.cuda.manual_seed", "torch.random.",
                             "numpy.random.seed", "random.seed"))
                and any(r == WORKER_INIT for r, _ in roles)
                and not self._worker_seeded.get(id(node), True)):  # resolved at the visit
            # torch already gives each worker its own seed, new every epoch; a fixed
            # `BASE + worker_id` replays the same augmentations every epoch.
            ctx.report(HIDDEN_RESEED, node, f"{short}() in a worker_init_fn with a seed that "
                       "ignores torch.initial_seed(): every epoch replays the same random "
                       "augmentations", severity=Severity.MEDIUM)
            return
        bad_roles = [(r, f) for r, f in roles if r != WORKER_INIT and not (
            r == PROCESS and not where.loops) and not (  # a worker process seeding at its start
            f.name == "set_epoch" and _mentions_epoch(node) and _mentions_seed(node)) and not (
            _STARTUP_HOOK.match(f.name) and not source and "state" not in (name or "").lower())]
        if "state" in (name or "").lower() and any(_RESTORE_HOOK.search(f.name) for _, f in
                                                    bad_roles):
            bad_roles = []  # on_load_checkpoint: restoring the saved RNG state is resume
        if "state" in (name or "").lower() and (_paired_restore(node, ctx, where) or _saved_before(
                node, where.frames[-1].node if where.frames else None)):
            bad_roles = []  # saved in on_validation_start (or just above), restored after it
        inner = where.frames[-1]
        if not label and inner.name in self._helpers and not ctx.own_roles(inner):
            bad_roles = []  # a seeding helper: its callers are judged at their call sites
        if bad_roles:
            sev = Severity.MEDIUM if bad_roles[0][0] == TEARDOWN else Severity.HIGH
            ctx.report(HIDDEN_RESEED, node, f"{short}() inside {ctx.describe_roles(bad_roles)}: "
                       "reseeds the RNG during training", severity=sev)
            return
        global_seed = name.startswith((
            "torch.manual_seed", "numpy.random.seed", "random.seed", "torch.cuda.manual_seed",
            "torch.set_rng_state", "torch.random.set_rng_state", "torch.random.manual_seed",
        )) or last_attr(node.func) in ("set_seed", "seed_everything")
        eval_class = inner.cls is not None and re.search(r"Eval|Validat", inner.cls.name)
        in_eval = bool(re.match(r"(?i)_?(eval|evaluate|validate|validation|run_eval|"
                                r"run_validation)(_\w+)?$", inner.name) or (
            eval_class and inner.name in ("run", "__call__", "evaluate", "compute")))
        if (global_seed and in_eval
                and (inner.cls is None or _in_module_trainer(inner) or eval_class)
                and _given_model(inner) and node.args
                and not any("fork_rng" in w for w in where.withs)
                and not _saved_before(node, inner.node)):  # (puts back the state it took)
            ctx.report(HIDDEN_RESEED, node, f"{short}() inside {inner.name}(): every evaluation "
                       "during training resets the global RNG, so the training run after it "
                       "replays the same random numbers", severity=Severity.MEDIUM)
            return
        if (name.startswith(("torch.manual_seed", "numpy.random.seed", "random.seed"))
                and node.args and _shape_seed(node.args[0])
                and not re.search(r"(?i)main|setup|seed|init|config", inner.name)):
            ctx.report(HIDDEN_RESEED, node, f"{short}() reseeded from tensor sizes inside "
                       f"{inner.name}(): every call with the same shapes replays the same random "
                       "numbers", severity=Severity.MEDIUM)  # manual_seed(cdf.shape[0] * n)
            return
        if node.args and all(literal(a) is not NOT_LITERAL for a in node.args) and any(
                _counter_gate(c) for c in where.conds):
            ctx.report(HIDDEN_RESEED, node, f"{short}() with a constant seed once a step/epoch "
                       "counter passes a threshold: training replays the same random numbers "
                       "from then on", severity=Severity.MEDIUM)
            return
        if (node.args and len(node.args) == 1 and isinstance(node.args[0], ast.Name)
                and re.fullmatch(r"(?i)_?worker_?id(x)?|wid", node.args[0].id)
                and name.startswith(("torch.manual_seed", "numpy.random.seed", "random.seed"))):
            ctx.report(HIDDEN_RESEED, node, f"{short}() seeded with the worker index alone: the "
                       "k-th worker of every rank and every epoch draws the same numbers",
                       severity=Severity.MEDIUM)
            return
        restarting = _step_seed_each_epoch(node, where)
        if restarting:
            ctx.report(HIDDEN_RESEED, node, f"{short}() reseeded every step from the step index "
                       f"{restarting}, which restarts each epoch: every epoch replays the same "
                       "dropout masks and augmentations", severity=Severity.MEDIUM)
            return
        epoch_loop = _fixed_in_counter_loop(node, where)
        if epoch_loop and not (where.loops and _saved_before(node, where.loops[-1])):
            # (saved and restored inside the same loop body: isolation around an evaluation)
            ctx.report(HIDDEN_RESEED, node, f"{short}() inside the loop over {epoch_loop} with a "
                       f"seed that does not change with {epoch_loop}: every epoch replays the "
                       "same shuffles, dropout masks and augmentations", severity=Severity.MEDIUM)
            return
        wrapper = ctx.in_decorator_wrapper(where)
        if wrapper and node.args and all(literal(a) is not NOT_LITERAL or _run_seed(a)
                                         for a in node.args):
            ctx.report(HIDDEN_RESEED, node, f"{short}() with a fixed seed inside the wrapper "
                       f"of decorator @{wrapper}: every call of a decorated function replays the "
                       "same random numbers")
            return
        exiting = _after_yield(node, where)
        if exiting and "state" in (name or "").lower() and node.args and isinstance(
                node.args[0], ast.Attribute) and isinstance(node.args[0].value, ast.Name) and (
                node.args[0].value.id == "self") and not _captured_in(where.frames[-1].node,
                                                                         node.args[0].attr):
            ctx.report(HIDDEN_RESEED, node, f"{short}() after the yield of {exiting}() restores "
                       f"self.{node.args[0].attr}, a snapshot kept from elsewhere, instead of the "
                       "state saved on entry: every exit rewinds the RNG", severity=Severity.MEDIUM)
            return
        if exiting and "state" not in (name or "").lower():
            ctx.report(HIDDEN_RESEED, node, f"{short}() after the yield of context manager "
                       f"{exiting}(): every exit of the block reseeds the RNG",
                       severity=Severity.MEDIUM)
            return
        if source == "cyclic":
            ctx.report(HIDDEN_RESEED, node, f"{short}() reseeded from a step/epoch counter "
                       "divided or taken modulo: the same random numbers repeat during training",
                       severity=Severity.MEDIUM)
            return
        if source == "hashed":
            ctx.report(HIDDEN_RESEED, node, f"{short}() reseeds the global RNG from a hash of "
                       f"its input in {where.frames[-1].name}(): the stream is reset on every "
                       "call (and hash() of a str changes per process)", severity=Severity.MEDIUM)
            return
        if source and not _fallback_seed(node, where.frames[-1].node if where.frames else None):
            ctx.report(HIDDEN_RESEED, node, f"{short}() seeded from time/pid/urandom/host: the "
                       "run cannot be reproduced", severity=Severity.MEDIUM)
            return
        if roles:  # worker_init_fn with a deterministic seed is the documented recipe
            return
        inner_fn = where.frames[-1].node
        if (isinstance(inner_fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.args
                and "state" not in (name or "").lower()
                and not _uses(node, _params(inner_fn)) and inner_fn.name not in ("main", "run")
                and not inner_fn.name.startswith("test")
                and not re.search(r"(?i)seed|determinis|reproduc", inner_fn.name) and (
                    not (_params(inner_fn) - {"self"})
                    or re.search(r"(?i)eval|estimate|valid|sample|generate", inner_fn.name))
                and ctx.flow.called_in_loop(inner_fn.name)):
            ctx.report(HIDDEN_RESEED, node, f"{short}() inside {inner_fn.name}(), which the file "
                       "calls from a loop: every call resets the RNG to the same point, so "
                       "training replays the same random numbers", severity=Severity.MEDIUM)
            return
        loop_vars: set[str] = set()
        callee = node.func.id if isinstance(node.func, ast.Name) else (
            node.func.slice.id if isinstance(node.func, ast.Subscript)
            and isinstance(node.func.slice, ast.Name) else "")  # SEEDERS[name](seed)
        loops = [loop for loop in where.loops if callee not in _loop_names(loop)]
        for loop in loops:  # (`for fn in SEEDERS: fn(seed)` loops over functions, not steps)
            loop_vars |= _loop_names(loop)
        if loops and not _uses(node, loop_vars | _assigned_in_loops(where)):
            ctx.report(HIDDEN_RESEED, node, f"{short}() inside a loop with a seed that does not "
                       "change: every iteration replays the same random numbers",
                       severity=Severity.MEDIUM)
            return
        if ctx.is_package_init and len(where.frames) == 1:
            ctx.report(HIDDEN_RESEED, node, f"{short}() at import time of a package: importing "
                       "it reseeds the caller's RNG", severity=Severity.MEDIUM)


def _from_worker_seed(call: ast.Call, ctx: Ctx) -> bool:
    """The seed derives from torch's per-worker seed (`torch.initial_seed()`,
    `get_worker_info().seed`), as the reproducibility recipe does, or from the run's configured
    seed (`seed + worker_id` with `seed` passed in, as mmdetection does). Only a seed fixed in
    the code (`AUG_BASE + worker_id`) is not."""
    nodes = [n for v in [*call.args, *(kw.value for kw in call.keywords)]
             for n in ctx.walk_values(v)]
    fallbacks = {id(m) for n in nodes if isinstance(n, ast.Call) and last_attr(n.func) == "get"
                 for a in n.args[1:] for m in subnodes(a)}  # cfg.get("seed", initial_seed())
    nodes = [n for n in nodes if id(n) not in fallbacks]
    if any((isinstance(n, ast.Call) and last_attr(n.func) in ("initial_seed", "seed")) or (
            isinstance(n, ast.Attribute) and n.attr == "seed" and (
                isinstance(n.value, ast.Call) or (isinstance(n.value, ast.Name) and any(
                    isinstance(v, ast.Call) and last_attr(v.func) == "get_worker_info"
                    for v in ctx.walk_values(n.value)))))  # info.seed, get_worker_info().seed
            for n in nodes):
        return True
    fn = ctx.frame.node
    params = [a.arg for a in fn.args.args if a.arg not in ("self", "cls")] if isinstance(
        fn, (ast.FunctionDef, ast.AsyncFunctionDef)) else []
    if params and not any(isinstance(n, ast.Name) and (n.id == params[0] or "worker" in n.id)
                          for n in nodes):
        return False  # seed(self.cfg.seed): every worker gets the same stream
    constant = [n for n in nodes if (isinstance(n, ast.Name) and n.id.lstrip("_").isupper())
                or (type(literal(n)) is int)]
    configured = [n for n in nodes if isinstance(n, ast.Name) and "worker" not in n.id
                  and not n.id.lstrip("_").isupper() and ctx.lookup(n.id) is None]
    bare_worker = bool(nodes) and all(isinstance(n, ast.Name) and "worker" in n.id
                                      for n in nodes if isinstance(n, (ast.Name, ast.Constant)))
    return bool(configured) or not (constant or bare_worker)  # seed(worker_id): every run alike


def _assigned_in_loops(where: Where) -> set[str]:
    """Names assigned inside the enclosing loops (a per-iteration seed is fine)."""
    out: set[str] = set()
    for loop in where.loops:
        for node in subnodes(loop):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    out.update(n.id for n in subnodes(target) if isinstance(n, ast.Name))
    return out
