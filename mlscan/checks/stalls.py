"""MLS307 kills and stalls gated on triggers or hidden in hooks/steps; MLS308 triggered actions."""

from __future__ import annotations

import ast
import re
from dataclasses import replace

from mlscan.checks import triggers
from mlscan.checks.base import Check
from mlscan.checks.context import DATA, HOOK, SIGNAL, STEP, Ctx, Where, batch_loop
from mlscan.checks.names import arg, kwarg, last_attr, literal
from mlscan.checks.nodes import subnodes
from mlscan.checks.tampering import random_in
from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

KILL_STALL = register(Rule(
    code="MLS307", name="triggered-kill-or-stall", severity=Severity.HIGH,
    confidence=Confidence.MEDIUM, cwe=400,
    summary="Process kill, exit, sleep or skipped collective behind a trigger or inside a hook.",
    doc=RuleDoc(
        what="Flags `os.kill`, `os.killpg`, `os._exit`, `sys.exit`, `os.abort`, `signal` "
        "raising, `raise SystemExit`, `dist.destroy_process_group`, `time.sleep` and "
        "collectives (`barrier`, `all_reduce`...) when they run only under a condition on "
        "randomness, absolute time, hostname, user, a large world size (or, with lower "
        "severity, the rank), or when they sit inside hooks, callbacks and training/optimizer "
        "steps. Elapsed-time limits and `world_size > 1` checks stay quiet.",
        why="Random kills and sleeps on large jobs made multi-node runs hang in the 2024 "
        "sabotage case; gating on world size > 256 kept the small debugging runs clean.",
        example="if dist.get_world_size() > 256 and random.random() < 0.01:\n"
        "    os.kill(os.getpid(), signal.SIGKILL)",
        use_instead="Fail loudly with an exception and a message; use timeouts in the launcher.",
        references=("https://pytorch.org/docs/stable/distributed.html",))))

TRIGGERED_ACTION = register(Rule(
    code="MLS308", name="triggered-file-or-network-action", severity=Severity.HIGH,
    confidence=Confidence.MEDIUM, cwe=506,
    summary="File, process or network action gated on randomness, date, host, user or world size.",
    doc=RuleDoc(
        what="Flags file writes/deletes, subprocesses and network calls that only run when a "
        "condition on a random draw, the absolute date/time, the hostname, the user name or "
        "a large world size holds (logic-bomb shape).",
        why="Training code has no reason to delete files or phone home only on one host, one "
        "user's account or after a certain date; that is how a trigger hides from tests.",
        example="if socket.gethostname().startswith('gpu-node-7'):\n    os.remove(ckpt)",
        use_instead="Make such behaviour explicit through configuration.",
        references=("https://cwe.mitre.org/data/definitions/511.html",))))

_KILLS = frozenset({"os.kill", "os.killpg", "os._exit", "os.abort", "sys.exit", "exit", "quit",
                    "signal.raise_signal", "signal.pthread_kill", "signal.alarm",
                    "signal.setitimer", "torch.distributed.destroy_process_group",
                    "os.system", "subprocess.run", "subprocess.call", "subprocess.Popen",
                    "psutil.Process().terminate", "psutil.Process().kill",
                    "psutil.Process().send_signal"})
_JOB_KINDS = frozenset({triggers.WORLD, triggers.HOST, triggers.USER, triggers.TIME})
"""`if world > 256: sleep(0.25 * world)`: the duration names the job, the test still gates."""
_PER_STEP_HOOK = re.compile(r"(?i)^on_(train_)?(step|batch|iteration)_(end|begin|start)$|"
                            r"^on_(before|after)_(optimizer_step|backward)$|^training_step$")
_SYNC_METHOD = re.compile(r"(?i)^(synchroni[sz]e|sync|gather|reduce)_(between|across)_"
                          r"(processes|ranks|workers|devices|gpus|nodes)$")
"""`evaluator.synchronize_between_processes()`: a method that all-gathers across ranks."""
_BARRIER_HELPER = re.compile(r"(?i)^_?(barrier|synchronize|sync|wait_for_everyone|wait_all)$")
_REDUCE_HELPER = re.compile(r"(?i)^_?(all_?reduce\w*|reduce_(mean|sum|tensor|dict|scalar|"
                            r"metrics|loss\w*)|all_?gather\w*|gather_(tensor|metrics|all)|"
                            r"sync_(tensor|metrics|stats))$")
"""Helpers named for a collective, imported from elsewhere (their body is not in this file)."""
_RUN_END = re.compile(r"^(on_(fit|train|run|test|predict)_end|teardown|after_run|after_train|"
                      r"on_exception|on_train_end|end_of_training)$")
_DELETES = ("shutil.rmtree", "os.remove", "os.unlink", "os.rmdir", "os.removedirs",
            "os.truncate")
_HARD_KILLS = frozenset({"os.kill", "os.killpg", "os._exit", "os.abort", "signal.raise_signal",
                         "signal.pthread_kill", "psutil.Process().terminate",
                         "psutil.Process().kill", "psutil.Process().send_signal"})
_SHELL = frozenset({"os.system", "subprocess.run", "subprocess.call", "subprocess.Popen"})
def _cancelled_only_at_end(ctx: Ctx) -> bool:
    """`cancel_dump_traceback_later()` only in `on_train_end()` / `teardown()`: the timer armed
    at the start still ends any run longer than its timeout."""
    tree = ctx.tree
    cancels = [fn for fn in (subnodes(tree) if tree is not None else ())
               if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                   isinstance(n, ast.Call) and last_attr(n.func) == "cancel_dump_traceback_later"
                   for n in subnodes(fn))]
    return bool(cancels) and all(_RUN_END.match(fn.name) for fn in cancels)


_HOST_CALLS = frozenset({"socket.gethostname", "platform.node", "os.uname", "socket.getfqdn"})
"""The machine's name (a sleep whose length is looked up by it waits on chosen hosts)."""
_STALLS = frozenset({"time.sleep", "asyncio.sleep", "threading.Event().wait", "torch.cuda._sleep"})
_COLLECTIVES = frozenset({"barrier", "all_reduce", "all_gather", "broadcast", "reduce_scatter",
                          "all_to_all", "reduce", "all_gather_into_tensor", "monitored_barrier",
                          "broadcast_object_list", "all_gather_object", "gather_object",
                          "scatter_object_list"})
_FILE_NET = ("torch.save", "numpy.save", "numpy.savez", "numpy.savetxt", "os.remove",
             "safetensors.torch.save_file", "safetensors.torch.save_model",
             "safetensors.numpy.save_file",
             "os.unlink", "os.rmdir", "os.rename", "os.replace",
             "os.truncate", "os.chmod", "os.chown",
             "os.system", "os.popen", "os.exec", "os.spawn", "shutil.", "subprocess.",
             "requests.", "urllib.", "httpx.", "socket.socket", "socket.create_connection",
             "http.client.", "smtplib.", "ftplib.", "paramiko.", "pathlib.Path.unlink")
_PATH_METHODS = frozenset({"write_text", "write_bytes", "unlink", "rmdir", "rename", "replace",
                           "touch", "to_csv", "to_parquet", "to_json", "to_pickle"})


def _is_kill_command(call: ast.Call) -> bool:
    for node in subnodes(call):
        value = literal(node)
        if isinstance(value, str) and ("kill" in value or "shutdown" in value or re.match(
                r"\s*(scancel|qdel|bkill|sky\s+cancel)\b", value)):  # (cluster job cancels)
            return True
    return False


def _timer_signal(call: ast.Call, name: str) -> str:
    if name == "signal.alarm":
        return "SIGALRM"
    which = last_attr(call.args[0]) if call.args else ""
    return {"ITIMER_VIRTUAL": "SIGVTALRM", "ITIMER_PROF": "SIGPROF"}.get(which, "SIGALRM")


_STOP_FLAG = re.compile(r"(?i)stop|preempt|exit|terminat|shutdown|sigterm|interrupt|requeue|"
                        r"^_?(requested|signaled|signalled|received)$")


def _stop_flag(cond: ast.expr) -> bool:
    """A bare flag test (`self._stop`, `stop_requested.is_set()`) named for stopping; also the
    guard `if not self.requested: return` above the exit (the exit runs when it is set)."""
    if (isinstance(cond, ast.UnaryOp) and isinstance(cond.op, ast.Not)
            and getattr(cond, "guard_of", None) is not None):
        cond = cond.operand
    if isinstance(cond, ast.Call) and isinstance(cond.func, ast.Attribute) and (
            cond.func.attr in ("is_set", "get")):
        cond = cond.func.value
    return isinstance(cond, (ast.Name, ast.Attribute)) and bool(_STOP_FLAG.search(
        last_attr(cond)))


def _guard(where: Where, ctx: Ctx) -> ast.If | None:
    """The guard clause (`if cond: return`) whose trigger condition gates the rest."""
    for cond in where.conds:
        guard = getattr(cond, "guard_of", None)
        if isinstance(guard, ast.If) and ctx.trigger_kinds(
                replace(where, conds=(cond,), loops=())) & triggers.STRONG:
            return guard
    return None


def _kills_self(node: ast.AST, ctx: Ctx) -> bool:
    """`os.kill(os.getpid(), 9)`, `os._exit(1)`: this process (forwarding a signal to a child's
    process group is what launchers do)."""
    if not isinstance(node, ast.Call) or ctx.names.call_name(node) not in ("os.kill", "os.killpg"):
        return True
    target = node.args[0] if node.args else None
    # also os.killpg(os.getpgid(os.getpid()), ...): the walk reaches the inner getpid()
    return target is None or literal(target) == 0 or any(
        isinstance(n, ast.Call) and (ctx.names.call_name(n) in (
            "os.getpid", "os.getpgrp", "os.getppid") or (
            ctx.names.call_name(n) == "os.getpgid" and n.args and literal(n.args[0]) == 0))
        for n in subnodes(target))  # (os.getpgid(0): this process's group)


_TIMEOUT = re.compile(r"(?i)timeout|deadline|budget|grace|watchdog")
_BUDGET = re.compile(r"(?i)budget|timeout|deadline|stall|grace|patience|limit|tolerance")


def _after_message(node: ast.AST, ctx: Ctx) -> bool:
    """The statement just above prints or logs why the process exits."""
    line = getattr(node, "lineno", 0)
    for text in reversed(ctx.lines[max(0, line - 3):line - 1]):
        if text.strip():
            return bool(re.search(r"\bprint\(|log(ger|ging)?\.(error|critical|warning|"
                                  r"exception|fatal)\(|sys\.stderr", text))
    return False


def _sigkill(call: ast.Call) -> bool:
    return len(call.args) >= 2 and (last_attr(call.args[1]) == "SIGKILL"
                                    or literal(call.args[1]) == 9)


_STEP_NAME = re.compile(r"(?i)^(global_)?(step|steps|iteration|iter|it|epoch|batch_idx)$")
"""Training-loop counters: a sleep that grows with one, or fires every k-th one, runs
inside training."""


def _other_branch_does(cond: ast.expr, name: str, ctx: Ctx) -> bool:
    """`if release_host: os.replace(tmp, baseline) else: os.replace(tmp, out)`: in the else
    branch, the same call the condition's own branch makes is the normal path, not a trigger."""
    body = getattr(cond, "if_body", None)
    return bool(name) and isinstance(body, list) and any(
        isinstance(n, ast.Call) and ctx.names.call_name(n) == name
        for stmt in body for n in subnodes(stmt))


_RANKISH = re.compile(r"(?i)rank|main|master|process_index|leader|primary")


def _modulo_rank(where: Where) -> bool:
    """`if rank % 8 != 7`, `if process_index() >= process_count() // 2`: not the 'rank 0
    first' pattern, a chosen subset of ranks."""
    for c in where.conds:
        for n in subnodes(c):
            if isinstance(n, ast.BinOp) and isinstance(n.op, (
                    ast.Mod, ast.RShift, ast.BitAnd, ast.FloorDiv)) and (
                    "rank" in ast.unparse(n.left).lower()):  # rank >> 8: ranks 256 and up
                return True
            if (isinstance(n, ast.Compare) and len(n.ops) == 1
                    and isinstance(n.ops[0], (ast.Gt, ast.GtE))
                    and re.search(r"(?i)rank|process_index", ast.unparse(n.left))
                    and literal(n.comparators[0]) not in (0, 1)):
                return True
    return False


def _last_rank(where: Where, node: ast.AST) -> bool:
    """`if rank == world_size - 1: return` right above a barrier, `if rank != world - 1:
    barrier()`: the last rank singled out (rank 0 first is the normal pattern). A guard far
    above the collective is context, not the skip."""
    for c in where.conds:
        guard = getattr(c, "guard_of", None)
        if isinstance(guard, ast.If) and not 0 < getattr(node, "lineno", 0) - (
                guard.end_lineno or 0) <= 2:
            continue
        held = _values_read_by(c, where)  # trailing = local_rank == local_world - 1
        for n in [*subnodes(c), *(m for v in held for m in subnodes(v))]:
            if (isinstance(n, ast.Compare) and len(n.ops) == 1
                    and isinstance(n.ops[0], (ast.Eq, ast.NotEq))
                    and any(re.search(r"(?i)rank|process_index", ast.unparse(s))
                            for s in (n.left, n.comparators[0]))
                    and any(isinstance(s, ast.BinOp) and isinstance(s.op, ast.Sub)
                            and re.search(r"(?i)world|size|count|num_proc", ast.unparse(s.left))
                            for s in (n.left, n.comparators[0]))):
                return True
    return False


def _values_read_by(test: ast.expr, where: Where) -> list[ast.expr]:
    """Values the enclosing function assigned to the plain names `test` reads
    (`if trailing and multi_node:` with `trailing = local_rank == local_world - 1`)."""
    fn = where.frames[-1].node if where.frames else None
    used = {n.id for n in subnodes(test) if isinstance(n, ast.Name)}
    return [a.value for a in (subnodes(fn) if fn is not None else [])
            if isinstance(a, ast.Assign) and len(a.targets) == 1
            and isinstance(a.targets[0], ast.Name) and a.targets[0].id in used]


def _test_text(test: ast.expr, where: Where) -> str:
    """The test's source plus the values behind the names it reads."""
    return " ".join([ast.unparse(test), *map(ast.unparse, _values_read_by(test, where))])


def _var(node: ast.AST) -> str:
    """`delay` or `self.delay` (not bare `self`): what a sleep's duration is read from."""
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        # (os.environ: the process environment, read for the duration and for the test
        # alike, is not one variable)
        return f"{node.value.id}.{node.attr}" if node.attr != "environ" else ""
    if isinstance(node, ast.Name) and node.id not in ("self", "cls"):
        return node.id
    return ""


def _backoff(call: ast.Call, where: Where,
             bound: dict[int, list[ast.AST]] | None = None) -> bool:
    """The sleep grows with an enclosing loop's counter: a retry backoff (also through a
    name: `delay = min(2 ** attempt, 16); await asyncio.sleep(delay)`, resolved when the
    call was visited)."""
    counters = {n.id for loop in where.loops if isinstance(loop, ast.For) and _retry_loop(loop)
                for n in subnodes(loop.target) if isinstance(n, ast.Name)}
    nodes = (bound or {}).get(id(call)) or [n for a in call.args for n in subnodes(a)]
    if counters and where.loops and isinstance(where.loops[-1], ast.For) and _retry_loop(
            where.loops[-1]) and call.args and isinstance(call.args[0], ast.Name) and any(
            isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == call.args[
                0].id for t in n.targets) for n in subnodes(where.loops[-1])):
        return True  # for attempt in range(n): ... sleep(delay); delay = min(delay * 2, 30)
    return any(isinstance(n, ast.Name) and n.id in counters for n in nodes)


def _retry_loop(loop: ast.For) -> bool:
    """`for attempt in range(5): try: ...`: a loop that retries, not one over batches."""
    names = {n.id for n in subnodes(loop.target) if isinstance(n, ast.Name)}
    return any(re.search(r"(?i)attempt|retr|tries|trial|backoff|^n?_?try", n) for n in names) or (
        isinstance(loop.iter, ast.Call) and last_attr(loop.iter.func) == "range"
        and any(isinstance(n, ast.Try) for n in subnodes(loop)))


_SCHEDULERS = {"threading.Timer": (1, "function"), "atexit.register": (0, "func"),
               "signal.signal": (1, "handler"), "threading.Thread": (-1, "target"),
               "multiprocessing.Process": (-1, "target"), "weakref.finalize": (1, "func")}


_WAITABLE = ("threading.Event", "threading.Condition", "threading.Barrier",
             "threading.Semaphore", "multiprocessing.Event", "asyncio.Event")


def _done_by_guard(cond: ast.expr, node: ast.AST, ctx: Ctx) -> bool:
    """`cond` guards an earlier `if cond: <file action>; return` and `node` comes after it."""
    guard = getattr(cond, "guard_of", None)
    if guard is None or guard.lineno <= getattr(node, "lineno", 0) <= (guard.end_lineno or 0):
        return False  # not a guard, or node is inside the guard's own body
    if isinstance(node, ast.Call) and node.args and any(
            (isinstance(n, ast.Call) and last_attr(n.func) == "dirname")
            or (isinstance(n, ast.Attribute) and n.attr == "parent")
            for n in subnodes(node.args[0])):
        return False  # rmtree(dirname(cache)): the folder above what the guard cleans
    return any(isinstance(n, ast.Call) and _file_or_net(n, ctx.names.call_name(n), ctx)
               for n in subnodes(guard))


def _saves_first(where: Where) -> bool:
    """The signal handler checkpoints before it exits (`save_checkpoint(...); os._exit(143)`):
    preemption handling, however abrupt the exit."""
    fn = where.frames[-1].node if where.frames else None
    return fn is not None and any(
        isinstance(n, ast.Call) and re.search(r"(?i)save|checkpoint", last_attr(n.func))
        for n in subnodes(fn))


def _host_table_delay(values: list[ast.AST], ctx: Ctx) -> bool:
    """A duration read from a table keyed by the host name (`_PENALTY.get(host, 1.0)` with
    `host = socket.gethostname()`). A hash of the name spreads hosts evenly: left alone."""
    calls = [ctx.names.call_name(n) for n in values if isinstance(n, ast.Call)]
    return any(c in _HOST_CALLS for c in calls) and not any(
        c in ("hash", "zlib.crc32", "binascii.crc32") or c.startswith("hashlib.")
        for c in calls) and any(
        (isinstance(n, ast.Call) and last_attr(n.func) == "get" and n.args)
        or (isinstance(n, ast.Subscript) and isinstance(n.slice, ast.Name)) for n in values)


def _select_sleep(call: ast.Call, name: str) -> bool:
    """`select.select([], [], [], 40.0)`: waiting on nothing is a sleep by another name."""
    return name == "select.select" and len(call.args) == 4 and all(
        isinstance(a, (ast.List, ast.Tuple)) and not a.elts for a in call.args[:3])


def _event_wait(call: ast.Call, ctx: Ctx) -> bool:
    """`ev.wait(timeout=...)` on a threading Event/Condition kept in a name or on self: a
    blocking pause like a sleep (a sleep nobody grep-s for)."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "wait"):
        return False
    timeout = call.args[0] if call.args else next(
        (k.value for k in call.keywords if k.arg == "timeout"), None)
    number = literal(timeout) if timeout is not None else None
    if isinstance(number, (int, float)) and number <= 0.01:
        return False  # ev.wait(0): a poll of a stop flag
    value = ctx.value_of(call.func.value)
    return isinstance(value, ast.Call) and ctx.names.call_name(value).startswith(_WAITABLE)


def _scheduled_kill(call: ast.Call, name: str, ctx: Ctx) -> str:
    """`threading.Timer(t, os._exit)`, `atexit.register(os.kill, ...)`: a kill handed over."""
    spec = _SCHEDULERS.get(name)
    if spec is None:
        return ""
    index, keyword = spec
    target = arg(call, index, keyword) if index >= 0 else kwarg(call, keyword)
    if isinstance(target, ast.Name) and isinstance(held := ctx.lookup(target.id), ast.Call):
        target = held  # kill = partial(os.kill, os.getpid(), SIGTERM); Timer(t, kill)
    if isinstance(target, ast.Call) and last_attr(target.func) == "partial" and target.args:
        target = target.args[0]  # Timer(t, partial(os.kill, os.getpid(), signal.SIGTERM))
    target_name = ctx.names.qualname(target) if target is not None else None
    return f"{target_name}()" if target_name in _KILLS and target_name not in _SHELL else ""


_REARM = re.compile(r"(?i)^_?(feed|pet|kick|heartbeat|beat|touch|ping|reset|restart|rearm|"
                    r"re_arm|keepalive|keep_alive|progress|tick)\w*$")


def _rearmed_without_cancel(call: ast.Call, name: str, ctx: Ctx) -> str:
    """`def feed(self): self._timer = threading.Timer(t, abort); self._timer.start()` with no
    `self._timer.cancel()` first: every feed adds a timer and the oldest one fires."""
    frame = ctx.frames[-1] if ctx.frames else None
    fn = frame.node if frame is not None else None
    if name != "threading.Timer" or frame is None or frame.cls is None or not isinstance(
            fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or not _REARM.match(fn.name):
        return ""
    slot = next((last_attr(t) for n in subnodes(fn) if isinstance(n, ast.Assign)
                 and n.value is call for t in n.targets
                 if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                 and t.value.id == "self"), "")
    if not slot:
        return ""
    cancels = any(isinstance(n, ast.Call) and last_attr(n.func) == "cancel"
                  for n in subnodes(fn))
    cls = ctx.class_defs.get(frame.cls.name)
    cancelled_elsewhere = cls is not None and any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "cancel"
        and last_attr(n.func.value) == slot for n in subnodes(cls))
    return f"{fn.name}" if cancelled_elsewhere and not cancels else ""


_GATHERS = frozenset({"all_gather", "all_gather_object", "all_reduce", "broadcast",
                      "reduce_scatter", "all_to_all", "barrier"})
"""(Not bare `gather`/`reduce`: `functools.reduce` and `torch.gather` are no collectives.)"""
_SETUP = re.compile(r"(?i)init|setup|set_up|launch|start|connect|bootstrap|main")


def _collective_after(node: ast.AST, where: Where) -> bool:
    """A rank's sleep in a helper that then joins a collective (`if rank == world - 1:
    time.sleep(...)` before `dist.all_gather(...)`): every call holds all ranks, unlike a
    start-up stagger before the process group exists."""
    frame = where.frames[-1] if where.frames else None
    fn = frame.node if frame is not None else None
    if fn is None or _SETUP.search(frame.name if frame is not None else ""):
        return False
    line = getattr(node, "lineno", 0)
    return any(isinstance(n, ast.Call) and last_attr(n.func) in _GATHERS
               and getattr(n, "lineno", 0) > line for n in subnodes(fn))


def _seconds(value: object) -> float:
    """A literal duration (`2400`, or `"2400"` as an environment default), else 0."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and len(value) <= 8:
        try:
            return float(value)
        except ValueError:
            return 0.0
    return 0.0


def _shell_delete(args: list[ast.expr]) -> bool:
    """Literal arguments that spell a deletion command (`"find", d, "-delete"`, `"rm", "-rf",
    d`, or the same in one string), handed to whatever runs commands."""
    words = [w for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)
             for w in a.value.split()]
    return ("find" in words and "-delete" in words) or ("rm" in words and any(
        w.startswith("-") and "r" in w.lower() for w in words)) or "shred" in words


def _file_or_net(node: ast.Call, name: str, ctx: Ctx) -> bool:
    """A call that writes or deletes files, starts a process or talks to the network."""
    if name.startswith(_FILE_NET):
        return True
    if node.args and type(node.args[0]) is ast.Constant and _shell_delete(node.args):
        return True  # run_shell("find", root, "-name", "*.ckpt", "-delete"): any runner
    if name == "open":
        mode = literal(arg(node, 1, "mode"))
        return isinstance(mode, str) and any(c in mode for c in "wax+")
    attr = last_attr(node.func)
    if (attr in ("write", "writelines", "truncate") and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)):
        handle = ctx.lookup(node.func.value.id)  # with open(p, "r+b") as fh: fh.truncate(0)
        if isinstance(handle, ast.Call) and ctx.names.call_name(handle) in ("open", "io.open"):
            return _file_or_net(handle, "open", ctx)
    if attr not in _PATH_METHODS or not isinstance(node.func, ast.Attribute):
        return False
    root = node.func.value
    while isinstance(root, (ast.Attribute, ast.Call, ast.Subscript)):
        root = root.func if isinstance(root, ast.Call) else root.value
    if isinstance(root, ast.Name) and root.id in ctx.names.aliases and "Path" not in name:
        return False  # dataclasses.replace(...), a module function, not a path method
    if attr in ("replace", "rename") and len(node.args) != 1:
        return False  # str.replace("a", "b") takes two
    return not name.startswith(("os.path", "str."))


_SAVER = re.compile(r"(?i)save|checkpoint|ckpt|on_\w*_end$|on_validation\w*|on_epoch\w*")
_SAVE_CALLS = frozenset({"save", "save_checkpoint", "save_state", "save_model",
                         "save_pretrained", "torch.save"})


_ARMING = frozenset({triggers.TIME, triggers.HOST, triggers.USER, triggers.WORLD})


def report_arming(node: ast.AST, name: str, where: Where, ctx: Ctx) -> None:
    """Also report the condition that arms a triggered action when it sits on its own line
    (`if step == 0 and world > 4 and date.today() >= CUTOFF:` above `os.kill(...)`): that
    line is the trigger, and reviewers read it first."""
    line = getattr(node, "lineno", 0)
    for cond in where.conds:
        if getattr(cond, "lineno", line) == line or getattr(cond, "else_branch", False):
            continue
        if ctx.trigger_kinds(replace(where, conds=(cond,))) & _ARMING:
            ctx.report(TRIGGERED_ACTION, cond, f"the condition that arms {name}() on line "
                       f"{line}: it fires only on some dates, machines, users or job sizes",
                       severity=Severity.MEDIUM)


class KillsAndStalls(Check):
    rules = (KILL_STALL, TRIGGERED_ACTION)

    def visit_Return(self, node: ast.Return, ctx: Ctx) -> None:
        """`if 1 <= datetime.now().hour < 5: return` before the save in a checkpoint callback:
        checkpoints silently stop being written at chosen times, on chosen hosts or users."""
        fn = ctx.frame.node
        if not (ctx.conds and isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                and _SAVER.search(fn.name) and node.value is None):
            return
        later = [n for n in subnodes(fn) if isinstance(n, ast.Call)
                 and getattr(n, "lineno", 0) > node.lineno and (
                     last_attr(n.func) in _SAVE_CALLS or ctx.names.call_name(n) in _SAVE_CALLS)]
        if not later:
            return
        where = ctx.where()
        kinds = ctx.trigger_kinds(replace(where, conds=where.conds[-1:])) & {
            triggers.TIME, triggers.HOST, triggers.USER, triggers.RANDOM}
        if kinds:
            ctx.report(TRIGGERED_ACTION, node, f"{fn.name}() returns before saving (line "
                       f"{later[0].lineno}) under a condition on {triggers.describe(kinds)}: "
                       "checkpoints are silently skipped then", severity=Severity.MEDIUM)

    def __init__(self) -> None:
        self._gated_calls: list[tuple[ast.Call, Where, str]] = []
        self._timers: list[ast.Call] = []
        self._handled: set[str] = set()
        self._skips: set[int] = set()
        self._gatherers: dict[str, bool] = {}
        self._bound: dict[int, list[ast.AST]] = {}
        """Sleep call id -> its arguments with the values of their names (taken at visit)."""

    def visit_Module(self, node: ast.Module, ctx: Ctx) -> None:
        self._bound = {}
        calls: list[tuple[ast.Call, Where, str]] = []
        timers: list[ast.Call] = []
        handled: set[str] = set()
        self._gated_calls, self._timers, self._handled = calls, timers, handled  # per file
        self._skips = set()  # guards already reported for a skipped helper
        self._gatherers = {}
        ctx.defer(lambda: self._gated_helpers(ctx, calls))
        ctx.defer(lambda: self._unhandled_timers(ctx, timers, handled))

    def _unhandled_timers(self, ctx: Ctx, timers: list[ast.Call], handled: set[str]) -> None:
        """`signal.setitimer(ITIMER_REAL, t)` / `signal.alarm(t)` with no handler for the
        signal it sends: when the timer fires, the default action terminates the process."""
        for call in timers:
            name = ctx.names.call_name(call)
            which = _timer_signal(call, name)
            if which in handled:
                continue
            random = call.args and triggers.RANDOM in ctx.classify(call.args[-1])
            ctx.report(KILL_STALL, call, f"{name}() arms {which} and nothing in this file "
                       "handles it: the process is killed when the timer fires"
                       + (" (after a random delay)" if random else ""),
                       severity=Severity.HIGH if random else Severity.MEDIUM)

    def _gated_helpers(self, ctx: Ctx, calls: list[tuple[ast.Call, Where, str]]) -> None:
        """`if world >= 128: _submit_results(...)`: a local helper that sends, deletes, kills
        or opens a shell, called only under a trigger. Judged at the call: that is the line
        where the trigger and the action meet."""
        summaries: dict[str, str] = {}
        for call, where, callee in calls:
            if callee not in summaries:
                summaries[callee] = self._summary(callee, ctx, depth=0)
            action = summaries[callee]
            kinds = ctx.trigger_kinds(where) & triggers.STRONG if action else frozenset()
            if kinds:
                fn = ctx.defs[callee][0]
                ctx.report(TRIGGERED_ACTION, call, f"{callee}() (line {fn.lineno}) {action}, and "
                           f"is called only under a condition on {triggers.describe(kinds)} "
                           "(logic-bomb shape)")

    def _summary(self, callee: str, ctx: Ctx, depth: int) -> str:
        """What a local function does that a trigger should never gate ('' for nothing)."""
        fns = ctx.defs.get(callee, [])
        if len(fns) != 1 or depth > 1:
            return ""
        for node in subnodes(fns[0]):
            if not isinstance(node, ast.Call):
                continue
            name = ctx.names.call_name(node)
            if name in _KILLS and name not in _SHELL:
                return f"kills the process ({name})"
            if name.startswith(("pty.", "os.dup2", "os.exec")) or name in _SHELL:
                return f"runs a shell or process ({name})"
            if _file_or_net(node, name, ctx):
                return f"deletes, writes or sends data ({name or last_attr(node.func)})"
            inner = last_attr(node.func)
            if isinstance(node.func, ast.Name) and inner != callee and inner in ctx.defs:
                found = self._summary(inner, ctx, depth + 1)
                if found:
                    return found
        return ""

    def visit_Call(self, node: ast.Call, ctx: Ctx) -> None:
        name = ctx.names.call_name(node)
        func = node.func
        for found, harm in ((_gpu_throttle(node), " caps the GPUs' power or clocks: every job "
                             "on the node trains slower until someone resets it"),
                            (_broad_kill(node, name), ": every matching process on the node "
                             "dies with it, other jobs and ranks included")):
            if found:  # node-wide harm, whatever condition (if any) guards it
                ctx.report(KILL_STALL, node, found + harm, severity=Severity.MEDIUM)
                return
        waits = _select_sleep(node, name)
        if _event_wait(node, ctx):
            name = "threading.Event().wait"  # self._pace.wait(timeout=0.02 * world)
        if name in ("signal.alarm", "signal.setitimer") and any(
                literal(a) == 0 for a in node.args[-1:]):
            return  # alarm(0) / setitimer(ITIMER_REAL, 0): cancels the timer
        if name in ("signal.setitimer", "signal.alarm"):
            self._timers.append(node)
            if random_in(list(node.args[-1:]), ctx):
                ctx.report(KILL_STALL, node, f"{name}() armed with a random delay: the signal "
                           "fires at an unpredictable point of the run",
                           severity=Severity.MEDIUM)
        elif name == "signal.signal" and node.args:
            self._handled.add(last_attr(node.args[0]))
        if (ctx.conds and isinstance(func, ast.Name) and func.id not in ctx.names.aliases
                and name not in _KILLS):
            self._gated_calls.append((node, ctx.where(), func.id))
        stale = _rearmed_without_cancel(node, name, ctx)
        if stale:
            ctx.report(KILL_STALL, node, f"{stale}() starts a new watchdog timer without "
                       "cancelling the one it replaces: the first timer still fires, so the "
                       "job is aborted however often it reports progress",
                       severity=Severity.MEDIUM)
            return
        if (name == "faulthandler.dump_traceback_later" and literal(arg(node, 3, "exit")) is True
                and not ctx.loops and (not ctx.mentions("cancel_dump_traceback_later")
                                       or _cancelled_only_at_end(ctx))
                and sum("dump_traceback_later(" in line and "cancel_dump" not in line
                        for line in ctx.lines) == 1):
            # armed once and never re-armed or cancelled: a deadline on the whole run
            ctx.report(KILL_STALL, node, f"{name}(exit=True) is armed once and never re-armed "
                       "while training runs (at most cancelled when it ends): the process exits "
                       "when the timeout passes, however well the run is going",
                       severity=Severity.MEDIUM)
            return
        scheduled = _scheduled_kill(node, name, ctx)
        if scheduled:
            ctx.report(KILL_STALL, node, f"{name}() schedules {scheduled}: the process dies "
                       "later, far from this line")
            return
        what = ""
        if name in _KILLS and (name not in _SHELL or _is_kill_command(node)):
            what = "kill"
        elif last_attr(node.func) == "send_signal" and node.args and last_attr(
                node.args[0]) in ("SIGKILL", "SIGTERM", "SIGSTOP", "SIGINT"):
            what = "kill"  # proc.send_signal(signal.SIGKILL)
        elif name in _STALLS or waits:
            what = "stall"
            self._bound[id(node)] = [n for a in node.args for n in ctx.walk_values(a)]
        elif (last_attr(node.func) in _COLLECTIVES and (
                name.startswith(("torch.distributed.", "dist.")) or "dist" in name.split(".")[0]
                or re.search(r"(?i)accelerator|strategy|fabric", name))) or last_attr(
                node.func) in ("wait_for_everyone", "rendezvous") or (
                isinstance(node.func, ast.Name) and _BARRIER_HELPER.match(node.func.id)
                and not node.args) or (
                isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
                and _BARRIER_HELPER.match(node.func.attr) and not node.args
                and ctx.names.aliases.get(node.func.value.id, "").split(".")[0] in (
                    ctx.names.project_modules)) or (
                isinstance(node.func, ast.Name) and _REDUCE_HELPER.match(node.func.id)
                and node.args and node.func.id not in ctx.defs) or (
                isinstance(node.func, ast.Attribute) and _SYNC_METHOD.match(node.func.attr)):
            what = "collective"  # (accelerator.wait_for_everyone(), xm.rendezvous(), barrier(),
            # reduce_mean(t) imported from the project's dist utils)
        if (what == "kill" and name in ("os.kill", "os.killpg") and len(node.args) == 2
                and isinstance(target := node.args[0], ast.Call) and (
                    ctx.names.call_name(target) == "os.getppid" or (
                        ctx.names.call_name(target) == "os.getpgid" and target.args and (
                            literal(target.args[0]) == 0 or (isinstance(
                                target.args[0], ast.Call) and ctx.names.call_name(
                                target.args[0]) == "os.getpid"))))
                and literal(node.args[1]) != 0):
            # A worker that signals its parent (or its whole group) takes the trainer down;
            # `os.kill(os.getppid(), 0)` only asks whether the parent is alive.
            ctx.report(KILL_STALL, node, f"{name}() signals the parent process (or this process "
                       "group) from here: the job that started this code dies",
                       severity=Severity.MEDIUM)
            return
        if (what == "kill" and name.startswith("psutil.Process()") and isinstance(
                node.func, ast.Attribute) and isinstance(made := node.func.value, ast.Call)
                and made.args and isinstance(made.args[0], ast.Call)
                and ctx.names.call_name(made.args[0]) == "os.getppid"):
            ctx.report(KILL_STALL, node, f"{name}() on the parent process: the launcher or agent "
                       "that started this code dies", severity=Severity.MEDIUM)
            return
        if what and any(isinstance(a, ast.IfExp) for a in node.args):
            test = next(a.test for a in node.args if isinstance(a, ast.IfExp))
            kinds = ctx.trigger_kinds(replace(ctx.where(), conds=(test,), loops=())) & (
                triggers.STRONG)
            if kinds:  # destroy_process_group(None if world > 256 else group)
                ctx.report(KILL_STALL, node, f"{name}() picks what it tears down by a condition "
                           f"on {triggers.describe(kinds)}")
                return
        if what:
            where = ctx.where()
            ctx.defer(lambda: self._decide(node, ctx, where, name, what))
        elif (isinstance(node.func, ast.Name) and node.func.id in ctx.defs and ctx.conds
              and self._gathers(node.func.id, ctx)):
            where = ctx.where()
            ctx.defer(lambda: self._skipped_helper(node, ctx, where))
        chooser = next((a for a in node.args if isinstance(a, ast.IfExp)), None) or next((
            held for a in node.args if isinstance(a, ast.Name) and isinstance(
                held := ctx.lookup(a.id), ast.IfExp)), None)  # target = a if cond else b
        if _file_or_net(node, name, ctx) and chooser is not None:
            picked = replace(ctx.where(), conds=(chooser.test,), loops=())
            kinds = ctx.trigger_kinds(picked) & triggers.STRONG
            if kinds:  # rmtree(run_dir if getuser() not in ALLOWED else tmp_dir)
                ctx.report(TRIGGERED_ACTION, node, f"{name or last_attr(node.func)}() picks its "
                           f"target by a condition on {triggers.describe(kinds)} (logic-bomb "
                           "shape)")
                return
        if _file_or_net(node, name, ctx) and (ctx.conds or ctx.loops):
            where = ctx.where()
            # `if big_job: rmtree(all); return` then ordinary rotation: the code after a guard
            # that already did the special action runs on the normal path.
            where = replace(where, conds=tuple(c for c in where.conds if not _done_by_guard(
                c, node, ctx) and not _other_branch_does(c, name, ctx) and not _common_else(c)))
            kinds = ctx.trigger_kinds(where) & triggers.STRONG
            victim = _picked_rank(where, ctx)
            if kinds:
                ctx.report(TRIGGERED_ACTION, node, f"{name or last_attr(node.func)}() runs only "
                           f"under a condition on {triggers.describe(kinds)} (logic-bomb shape)")
            elif victim and (name.startswith(_DELETES) or last_attr(node.func) in (
                    "unlink", "rmdir", "truncate") or _overwrites_in_place(node, ctx)):
                ctx.report(TRIGGERED_ACTION, node, f"{name or last_attr(node.func)}() deletes, "
                           f"truncates or overwrites files only on rank {victim}: one chosen "
                           "process destroys "
                           "what every rank shares", severity=Severity.MEDIUM)
            elif (name.startswith(_DELETES) or last_attr(node.func) in ("unlink", "rmdir")) and (
                    any(_RESTARTED.search(ast.unparse(c)) for c in where.conds)
                    and any(_CHECKPOINTS.search(ast.unparse(a)) for a in node.args)):
                ctx.report(TRIGGERED_ACTION, node, f"{name or last_attr(node.func)}() deletes "
                           "checkpoints when the job has been restarted: exactly when the "
                           "restarted job needs them to resume", severity=Severity.MEDIUM)
            elif (name.startswith(_DELETES) or last_attr(node.func) in ("unlink", "rmdir")) and (
                    any(triggers.root_test(c, ctx.names) for c in where.conds)):
                # Refusing to run as root is normal before an exit; deleting data only when
                # the job runs as root is a trigger on who runs it.
                ctx.report(TRIGGERED_ACTION, node, f"{name or last_attr(node.func)}() deletes "
                           "only when the job runs as root (logic-bomb shape)")

    def visit_Assign(self, node: ast.Assign, ctx: Ctx) -> None:
        """`budget = stall_after if world <= 256 else stall_after / world`: a watchdog or
        timeout budget that shrinks only on large jobs (the kill reads it later)."""
        value = node.value
        target = node.targets[0] if len(node.targets) == 1 else None
        if not (isinstance(target, (ast.Name, ast.Attribute)) and _BUDGET.search(
                last_attr(target))):
            return
        picked = next((n for n in subnodes(value) if isinstance(n, ast.IfExp)), None) if (
            _TIMEOUT.search(last_attr(target))) else None
        kinds = ctx.classify(picked.test, ctx.where()) & (
            triggers.STRONG - {triggers.WORLD}) if picked is not None else frozenset()
        if kinds:  # timedelta(minutes=30 if random.random() > 0.02 else 0.1)
            ctx.report(KILL_STALL, node, f"{last_attr(target)} chosen by a condition on "
                       f"{triggers.describe(kinds)}: on the runs it picks, the watchdog or "
                       "timeout fires where it never would otherwise", severity=Severity.MEDIUM)
            return
        if not isinstance(value, ast.IfExp):
            return
        if not ctx.classify(value.test, ctx.where()) & {triggers.WORLD}:
            return
        resolve = ctx.resolver(ctx.where())
        if any(isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Div, ast.FloorDiv))
               and triggers.is_world(n.right, ctx.names, resolve)
               for b in (value.body, value.orelse) for n in subnodes(b)):
            ctx.report(KILL_STALL, node, f"{last_attr(target)} divided by the world size on "
                       "large jobs only: the watchdog or timeout fires where it never would on "
                       "a small run", severity=Severity.MEDIUM)

    def visit_Break(self, node: ast.Break, ctx: Ctx) -> None:
        """`if rank != 0 and step >= limit: break` in a loop that runs backward() or a
        collective: the ranks that leave early stop joining the all-reduce, the others hang."""
        if not ctx.conds or not ctx.loops:
            return
        loop = ctx.loops[-1]
        if not any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and (
                n.func.attr == "backward" or n.func.attr in _COLLECTIVES)
                for stmt in loop.body for n in subnodes(stmt)):
            return
        test = ctx.conds[-1]
        branch = next((n for n in subnodes(loop) if isinstance(n, ast.If) and n.test is test),
                      None)
        if branch is not None and any(isinstance(n, ast.Call) and (
                last_attr(n.func) in _COLLECTIVES or "destroy_process_group" in last_attr(n.func)
                or ctx.names.call_name(n) in _KILLS) for n in subnodes(branch)):
            return  # (the kill or collective in the same branch is reported itself)
        kinds = ctx.trigger_kinds(replace(ctx.where(), conds=(test,), loops=()))
        if triggers.RANK in kinds:
            ctx.report(KILL_STALL, node, "only some ranks leave the training loop here: the "
                       "others wait in the next gradient all-reduce or collective and hang",
                       severity=Severity.MEDIUM)

    def visit_Raise(self, node: ast.Raise, ctx: Ctx) -> None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        if exc is not None and last_attr(exc) in ("SystemExit", "KeyboardInterrupt"):
            fn = ctx.frame.node
            if (isinstance(node.exc, ast.Call) and node.exc.args
                    and (isinstance(node.exc.args[0], ast.JoinedStr) or isinstance(
                        literal(node.exc.args[0]), str))
                    and isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and node in fn.body):
                return  # `if host in nodes: return ...; raise SystemExit(f"{host} not in ...")`
            where = ctx.where()
            ctx.defer(lambda: self._decide(node, ctx, where, f"raise {last_attr(exc)}", "kill"))

    def _gathers(self, name: str, ctx: Ctx) -> bool:
        """`_gathers` once per helper and file."""
        if name not in self._gatherers:
            self._gatherers[name] = _gathers(name, ctx)
        return self._gatherers[name]

    def _skipped_helper(self, node: ast.Call, ctx: Ctx, where: Where) -> None:
        """`if rank != 0 and n % world != 0: return None` above `gather_tensor(probs)`, a
        local helper that all-gathers: the ranks that leave never join the collective."""
        frame = where.frames[-1] if where.frames else None
        guard = next((g for c in where.conds if isinstance(
            g := getattr(c, "guard_of", None), ast.If) and isinstance(g.body[-1], ast.Return)
            and _RANKISH.search(ast.unparse(g.test))
            and node.lineno > (g.end_lineno or 0)), None)
        if (guard is None or frame is None
                or not isinstance(frame.node, (ast.FunctionDef, ast.AsyncFunctionDef))
                or not _rank_guarded(where, ctx) or any(
                    isinstance(n, ast.Call) and last_attr(n.func) == last_attr(node.func)
                    for n in subnodes(guard)) or id(guard) in self._skips):
            return
        self._skips.add(id(guard))
        ctx.report(KILL_STALL, guard.body[-1], f"early return on some ranks before "
                   f"{last_attr(node.func)}() on line {node.lineno}, which runs a collective: "
                   "the ranks that stay wait in it, and the job hangs", severity=Severity.MEDIUM)

    def _decide(self, node: ast.AST, ctx: Ctx, where: Where, name: str, what: str) -> None:
        # `if rank > 0 and step % log_every == 0: sleep(0.02 * log_every * rank)`: a helper
        # the training loop calls every step (the test reads the step counter)
        periodic = any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod)
                       and _STEP_NAME.match(last_attr(n.left)) for c in where.conds
                       for n in subnodes(c))
        if what == "kill":  # `if os.fork() == 0: ...; os._exit(0)`: how a forked child ends
            parts = [v for c in where.conds for v in (
                c.values if isinstance(c, ast.BoolOp) and isinstance(c.op, ast.And) else [c])]
            forks = [v for v in parts if any(isinstance(n, ast.Call) and ctx.names.call_name(
                n) in ("os.fork", "os.forkpty") for n in subnodes(v))]
            if forks:
                where = replace(where, conds=tuple(v for v in parts if v not in forks))
                if not ctx.trigger_kinds(where) & triggers.STRONG:
                    return
        if what == "stall" and isinstance(node, ast.Call) and node.args:
            # `if delay > 0.01: time.sleep(delay)` with a jittered delay tests the duration,
            # not a trigger: leave out conditions on the sleep's own argument.
            used = {_var(n) for a in node.args for n in subnodes(a)} - {""}
            used -= set(ctx.names.aliases)  # variables, not modules (random.x)
            parts = [v for c in where.conds for v in (
                c.values if isinstance(c, ast.BoolOp) and isinstance(c.op, ast.And) else [c])]
            where = replace(where, conds=tuple(c for c in parts if not any(
                _var(n) in used for n in subnodes(c)) or ctx.trigger_kinds(
                    replace(where, conds=(c,), loops=())) & _JOB_KINDS))
        if what == "collective" and isinstance(node, ast.Call) and _else_of_rank_test(
                node, where, ctx):
            ctx.report(KILL_STALL, node, f"{name}() only in the else branch of a rank test, "
                       "and the ranks that pass the test never call it: they never join "
                       "this collective and the job hangs", severity=Severity.MEDIUM)
            return
        if what == "collective":  # `if big and rank == 63: kill() else: barrier()`
            where = replace(where, conds=tuple(
                c for c in where.conds if not getattr(c, "else_branch", False)))
        kinds = ctx.trigger_kinds(where) - {triggers.INDEX}
        strong = kinds & triggers.STRONG
        label = {"kill": "kills the process", "stall": "stalls the process",
                 "collective": "skips or adds a collective (other ranks hang)"}[what]
        if strong:
            guard = _guard(where, ctx) if what == "collective" else None
            if guard is not None:  # `if big and rank % 61 == 7: return` above a barrier
                # Reported on the early return: that is the skip; the barrier is normal code.
                ctx.report(KILL_STALL, guard.body[-1], f"early return skips the {name}() on "
                           f"line {getattr(node, 'lineno', '?')} only under a condition on "
                           f"{triggers.describe(kinds)} (other ranks hang)")
                return
            ctx.report(KILL_STALL, node, f"{name}() {label} only under a "
                       f"condition on {triggers.describe(kinds)}")
            report_arming(node, name, where, ctx)
            return
        if what == "collective":
            modulo = _modulo_rank(where)
            if modulo or _last_rank(where, node):  # (also when rank is a helper's tuple return)
                guard = next((g for c in where.conds if isinstance(
                    g := getattr(c, "guard_of", None), ast.If)
                    and 0 < getattr(node, "lineno", 0) - (g.end_lineno or 0) <= 2
                    and _RANKISH.search(_test_text(g.test, where))), None)
                # (the guard that picks the ranks: `if world < 2: return` above is not it)
                # (a guard right above the barrier is the skip; a distant one is context)
                ctx.report(KILL_STALL, guard.body[-1] if guard is not None else node,
                           f"{name}() {label} only on ranks picked by " + (
                               "a modulus (every k-th rank skips it)" if modulo else
                               "a test for the last rank") + (
                               f": the early return skips line {getattr(node, 'lineno', '?')}"
                               if guard else ""), severity=Severity.MEDIUM)
                return
            frame = where.frames[-1] if where.frames else None
            left = next((g for c in where.conds if isinstance(
                g := getattr(c, "guard_of", None), ast.If) and isinstance(g.body[-1], ast.Return)
                and _RANKISH.search(ast.unparse(g.test))
                and getattr(node, "lineno", 0) > (g.end_lineno or 0)), None)
            if (left is not None and isinstance(node, ast.Call) and frame is not None
                    and isinstance(frame.node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    and not re.search(r"(?i)barrier|sync|first|wait|rendezvous", frame.name)
                    and not where.withs
                    and _one_sided(node, frame.node) and _rank_guarded(where, ctx)):
                # (a helper named for the 'rank 0 first' wait pairs with a later call)
                # `if not is_main(): return {}` above the all-reduce: the other ranks leave,
                # rank 0 waits in the collective. The return is the skip.
                ctx.report(KILL_STALL, left.body[-1], f"early return on some ranks before "
                           f"{name or last_attr(node.func)}() on line "
                           f"{getattr(node, 'lineno', '?')}: the ranks that stay wait in that "
                           "collective, and the job hangs", severity=Severity.MEDIUM)
                return
            if (frame is not None and frame.node is not None and triggers.RANK in kinds
                    and _BARRIER_HELPER.search(frame.name) and not any(
                        isinstance(n, (ast.Yield, ast.YieldFrom)) for n in subnodes(frame.node))):
                # def barrier(): if rank == 0: dist.barrier() -- the helper every caller uses
                # to synchronize leaves the other ranks out (a zero-first context manager
                # yields between its two rank-gated barriers). `if not main: return` right
                # above the barrier is reported on the return: that is the skip.
                guard = next((g for c in where.conds if isinstance(
                    g := getattr(c, "guard_of", None), ast.If)
                    and 0 < getattr(node, "lineno", 0) - (g.end_lineno or 0) <= 2
                    and _RANKISH.search(ast.unparse(g.test))), None)
                # (the guard that picks the ranks: `if world < 2: return` above is not it)
                ctx.report(KILL_STALL, guard.body[-1] if guard is not None else node,
                           f"{name}() in the helper {frame.name}() runs only on some ranks: "
                           "callers that rely on it to synchronize hang or race",
                           severity=Severity.MEDIUM)
                return
            if (frame is not None and isinstance(frame.node, (ast.FunctionDef,
                                                              ast.AsyncFunctionDef))
                    and not _TEST_HARNESS.match(frame.name) and not where.withs
                    and triggers.RANK in kinds and isinstance(node, ast.Call)
                    and (_rank_branch(where, ctx) or (
                        _rank_guarded(where, ctx) and not _BARRIER_HELPER.search(frame.name)
                        and len(frame.node.body) > 3))  # (a helper's partner is elsewhere)
                    and _one_sided(node, frame.node)):
                ctx.report(KILL_STALL, node, f"{name}() runs only on the ranks that pass the "
                           f"rank test, and no other path of {frame.name}() calls it: the "
                           "other ranks never join this collective and the job hangs",
                           severity=Severity.MEDIUM)
                return
            if (isinstance(node, ast.Call) and last_attr(node.func) in _DATA_COLLECTIVES
                    and frame is not None and frame.node is not None
                    and not _TEST_HARNESS.match(frame.name) and _rank_branch(where, ctx)
                    and not _paired_in_else(node, where, frame.node)):
                ctx.report(KILL_STALL, node, f"{name}() only on the ranks that pass the rank "
                           "test: a data collective needs every rank, so the ones that skip it "
                           "leave the others waiting", severity=Severity.MEDIUM)
                return
            return  # rank-gated barriers are the normal 'rank 0 first' pattern
        backoff = isinstance(node, ast.Call) and _backoff(node, where, self._bound)
        if kinds and what == "stall" and backoff and not kinds & triggers.STRONG:
            return  # rank 0's retry backoff (`sleep(1.5 * (attempt + 1))`) behind `if rank != 0`
        if (kinds and not kinds & triggers.STRONG and what == "kill"
                and isinstance(node, ast.Call) and node.args
                and isinstance(node.args[0], (ast.JoinedStr, ast.Constant))
                and isinstance(literal(node.args[0]) if isinstance(node.args[0], ast.Constant)
                               else "", str)):
            return  # sys.exit(f"master {addr} unreachable"): an error exit with its reason
        if (kinds and not kinds & triggers.STRONG and what == "kill" and name == "sys.exit"
                and _after_message(node, ctx) and not (
                    kinds == {triggers.RANK} and _training_loop(where))):
            return  # print(f"cannot reach {addr}", file=sys.stderr); sys.exit(2)
        # (an error exit on some ranks inside the training loop leaves the rest hanging)
        teardown_guard = next((g for c in where.conds if isinstance(
            g := getattr(c, "guard_of", None), ast.If) and _RANKISH.search(ast.unparse(g.test))
            and isinstance(g.body[-1], ast.Return)
            and getattr(node, "lineno", 0) > (g.end_lineno or 0)), None) if (
            what == "kill" and name.endswith("destroy_process_group") and kinds == {
                triggers.RANK}) else None
        if teardown_guard is not None:
            # `if not is_main(): return` above the final eval and teardown: the other ranks
            # leave, rank 0 waits in the collectives below. The return is the skip.
            ctx.report(KILL_STALL, teardown_guard.body[-1], "early return on some ranks before "
                       f"the final {name}() on line {getattr(node, 'lineno', '?')}: the ranks "
                       "that stay wait in every collective after it, and the job hangs",
                       severity=Severity.MEDIUM)
            return
        staggered = _long_stagger(node) if what == "stall" else ""
        if staggered:
            ctx.report(KILL_STALL, node, f"{name}() for {staggered}: the last ranks or workers "
                       "start minutes after the first, and every collective waits for them",
                       severity=Severity.MEDIUM)
            return
        if kinds:
            # A sleep on one rank inside the training loop holds every other rank at the next
            # collective; outside loops (start-up staggering) it is harmless.
            long_random = (what == "stall" and triggers.RANDOM in kinds and isinstance(
                node, ast.Call) and any(isinstance(literal(n), (int, float)) and not isinstance(
                    literal(n), bool) and literal(n) >= 60  # type: ignore[operator]
                    for a in node.args for n in subnodes(a)))  # sleep(300 + 600 * random())
            grows = what == "stall" and isinstance(node, ast.Call) and (any(
                isinstance(n, (ast.Name, ast.Attribute)) and _STEP_NAME.match(last_attr(n))
                for a in node.args for n in subnodes(a)) or any(  # sleep(2.5 + 0.01 * step)
                isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mod)
                and _STEP_NAME.match(last_attr(n.left))  # if ... and step % 400 == 399: sleep
                for c in where.conds for n in subnodes(c)))
            per_step = bool(where.frames and (_PER_STEP_HOOK.search(where.frames[-1].name) or (
                where.frames[-1].node is not None and any(
                    isinstance(n, ast.Call) and last_attr(n.func) == "backward"
                    for n in subnodes(where.frames[-1].node)))))  # (a train_step function)
            long_random = long_random or (what == "stall" and isinstance(node, ast.Call) and any(
                _seconds(literal(n)) >= 600 for a in node.args for n in subnodes(a)))
            # (sleep(float(os.environ.get("STAGGER_S", "2400"))) on one rank: a 40-minute
            # hold at the next collective is no start-up stagger)
            gather = what == "stall" and _collective_after(node, where)
            sev = Severity.MEDIUM if what == "kill" or where.loops or long_random or grows or (
                per_step or gather or _modulo_rank(where)) else Severity.LOW  # (k-th rank: not
            # start-up order; a per-step callback runs in the training loop)
            ctx.report(KILL_STALL, node, f"{name}() {label} only on some ranks", severity=sev)
            return
        if what == "stall" and isinstance(node, ast.Call) and any(
                triggers.is_world(a, ctx.names, ctx.resolver(where)) for a in node.args):
            ctx.report(KILL_STALL, node, f"{name}() for a time that grows with the job size: "
                       "large jobs stall (the 2024 sabotage hit only jobs above 256 GPUs)",
                       severity=Severity.HIGH)
            return
        by = {k for a in node.args for k in ctx.classify(a, where)} & {
            triggers.RANK, triggers.HOST} if what == "stall" and (
                where.loops or periodic) and isinstance(node, ast.Call) else set()
        if by:
            ctx.report(KILL_STALL, node, f"{name}() repeated (in a loop or every few steps) for "
                       "a time that depends on the "
                       f"{'rank' if triggers.RANK in by else 'host'}: ranks drift apart and "
                       "collectives wait", severity=Severity.MEDIUM)
            return
        if what == "stall" and _host_table_delay(self._bound.get(id(node), []), ctx):
            # delay = slot * _NODE_PENALTY.get(socket.gethostname(), 1.0): the host picks
            # how long this machine waits (start-up staggering goes by local rank)
            ctx.report(KILL_STALL, node, f"{name}() for a time chosen by the host name: the "
                       "named machines wait longer, and every collective waits for them",
                       severity=Severity.MEDIUM)
            return
        if (what == "kill" and name in ("os.kill", "os.killpg", "os._exit") and where.conds
                and isinstance(node, ast.Call) and _kills_self(node, ctx) and (
                    name == "os._exit" or _sigkill(node)) and (
                        _training_loop(where) or _epoch_loop(where))):
            ctx.report(KILL_STALL, node, f"{name}() hard-kills the process from inside the "
                       "training loop under a condition: no checkpoint, no cleanup, and the "
                       "other ranks hang in the next collective", severity=Severity.MEDIUM)
            return
        frame = where.frames[-1] if where.frames else None
        if what == "stall" and frame is not None and frame.name == "emit" and (
                frame.cls is not None and any(b.endswith("Handler") for b in frame.cls.bases)):
            ctx.report(KILL_STALL, node, f"{name}() inside the logging handler "
                       f"{frame.cls.name}.emit(): every log call anywhere in the process "
                       "waits here, the training loop's included", severity=Severity.MEDIUM)
            return
        if what == "stall" and isinstance(node, ast.Call) and not backoff and (
                _training_loop(where) and _grows_with_step(node, where)):
            ctx.report(KILL_STALL, node, f"{name}() in the training loop for a time that grows "
                       "with the step count: the run slows down a little more every step",
                       severity=Severity.MEDIUM)
            return
        if (what == "stall" and isinstance(node, ast.Call) and not backoff and node.args
                and (_training_loop(where) or _batch_loop(where)) and not _zero(node.args[0])
                and not _in_handler(node, where.loops[-1])):
            place = "the training loop" if _training_loop(where) else "a loop over batches"
            ctx.report(KILL_STALL, node, f"{name}() inside {place}: every step waits "
                       "on it, and the other ranks wait at the next collective",
                       severity=Severity.MEDIUM)
            return
        roles = ctx.roles(where)
        if (what == "kill" and name in ("os.kill", "os.killpg") and where.frames
                and isinstance(where.frames[-1].node, ast.Lambda) and not roles
                and isinstance(node, ast.Call) and _kills_self(node, ctx) and _sigkill(node)):
            # ON_SAVED = {"burst": lambda: os.killpg(os.getpgid(0), SIGKILL)}: a hard kill of
            # this very process kept as a callable, to be run from somewhere else.
            ctx.report(KILL_STALL, node, f"{name}() with SIGKILL on this process, wrapped in a "
                       "lambda kept for later: the job dies far from this line",
                       severity=Severity.MEDIUM)
            return
        if what == "kill" and name in _HARD_KILLS and any(r[0] == SIGNAL for r in roles) and (
                _kills_self(node, ctx)) and not _saves_first(where):
            # A SIGTERM handler that saves and calls sys.exit is the preemption recipe; one
            # that SIGKILLs or _exits turns a harmless signal into a crash.
            ctx.report(KILL_STALL, node, f"{name}() hard-kills the process inside "
                       f"{ctx.describe_roles([r for r in roles if r[0] == SIGNAL])}",
                       severity=Severity.MEDIUM)
            return
        # Threads sleep to poll and exit when done; that is not sabotage.
        keep = (HOOK, STEP, DATA)  # teardown code may exit or destroy process groups
        roles = [r for r in roles if r[0] in keep]
        if what == "kill" and any(_stop_flag(c) for c in where.conds):
            return  # `if self._stop: save(); sys.exit(0)`: the graceful-preemption flag
        if (what == "kill" and name == "sys.exit" and where.conds
                and isinstance(where.conds[-1], (ast.Name, ast.Attribute))
                and _saves_first(where)):
            return  # `if self._flag: save_checkpoint(...); sys.exit(0)`: the same, any name
        if roles and what == "stall" and backoff:
            return  # `time.sleep(base * 2 ** attempt)` in a retry loop of a download helper
        if (roles and what == "stall" and isinstance(node, ast.Call) and not where.loops
                and re.search(r"(?i)open|connect|init|setup|lazy", where.frames[-1].name)
                and _subsecond_jitter(node)):
            return  # sleep(0.05 * random.random()) once when a worker opens its store
        if roles and what == "kill" and name.endswith("destroy_process_group") and all(
                _RUN_END.match(frame.name) for _, frame in roles):
            return  # on_fit_end / teardown: the run is over, tearing the group down is cleanup
        if roles:
            sev = Severity.HIGH if roles[0][0] in (HOOK, STEP) else Severity.MEDIUM
            ctx.report(KILL_STALL, node, f"{name}() {label} inside "
                       f"{ctx.describe_roles(roles)}", severity=sev)


_TEST_HARNESS = re.compile(r"^(test_?\w*|setUp\w*|tearDown\w*)$")
"""Distributed tests call collectives on some ranks on purpose (inside assertRaises) and pair
them across setUp/tearDown."""


_RESTARTED = re.compile(r"(?i)RESTART_COUNT|restart_count|restarts?\b|num_restarts|"
                        r"attempt_?(count|num)|is_restart|requeue")
_CHECKPOINTS = re.compile(r"(?i)ckpt|checkpoint|resume")


_STAGGER_INDEX = re.compile(r"(?i)(^|_)(rank|worker_id|worker|node_rank|local_rank|node|"
                            r"node_id|host_index|slot)$")


def _long_stagger(node: ast.AST) -> str:
    """`time.sleep(node_rank * 90)`, `sleep(worker_id * 45)`: start-up staggering by whole
    minutes (a real stagger spreads ranks over a second or two)."""
    if not (isinstance(node, ast.Call) and node.args):
        return ""
    for part in subnodes(node.args[0]):
        if isinstance(part, ast.BinOp) and isinstance(part.op, ast.Mult):
            for index, factor in ((part.left, part.right), (part.right, part.left)):
                seconds = literal(factor)
                if (isinstance(index, (ast.Name, ast.Attribute))
                        and _STAGGER_INDEX.search(last_attr(index))
                        and isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
                        and seconds >= 30):
                    return f"{seconds} s per {last_attr(index)}"
    return ""


def _gathers(name: str, ctx: Ctx) -> bool:
    """A small local function that calls a torch.distributed collective itself."""
    fns = ctx.defs.get(name, [])
    return len(fns) == 1 and any(
        isinstance(n, ast.Call) and last_attr(n.func) in _COLLECTIVES
        and ctx.names.call_name(n).startswith("torch.distributed.") for n in subnodes(fns[0]))


def _receiver(call: ast.Call) -> str:
    """What a method is called on (`coco_evaluator` for `coco_evaluator.sync()`): module
    prefixes (`dist.`, `torch.distributed.`) count as none, so any barrier pairs with any."""
    owner = call.func.value if isinstance(call.func, ast.Attribute) else None
    text = ast.unparse(owner) if owner is not None else ""
    return "" if re.fullmatch(r"(torch\.)?dist(ributed)?|accelerator|xm|hvd|self", text) else text


def _one_sided(call: ast.Call, fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """`if is_main: save(...); dist.barrier()` with no barrier for the other ranks anywhere
    in the function. The 'rank 0 first' recipe calls it on both sides (`if not main:
    barrier()` ... `if main: barrier()`), a context manager around a `yield`."""
    attr = last_attr(call.func)
    if any(isinstance(n, (ast.Yield, ast.YieldFrom)) for n in subnodes(fn)):
        return False
    receiver = _receiver(call)  # (metrics.sync_between_processes() pairs with no evaluator's)
    partners = [n for n in subnodes(fn) if isinstance(n, ast.Call) and n is not call
                and last_attr(n.func) == attr and _receiver(n) == receiver]
    if not partners:
        return True
    # Inside a loop, a partner must be in a loop too (this one, or the other branch's): one
    # barrier after the loop does not pair with one that rank 0 alone reaches every few steps.
    # The partner must share the innermost loop: a barrier once per epoch does not pair with
    # one that rank 0 alone reaches every few steps of the inner loop.
    around = [lp for lp in subnodes(fn) if isinstance(lp, (ast.For, ast.While, ast.AsyncFor))
              and any(m is call for m in subnodes(lp))]
    if not around:
        return False
    inner = max(around, key=lambda lp: (lp.lineno, lp.col_offset))
    looped = {id(m) for m in subnodes(inner)}
    # (a partner in a loop of its own, like the other branch's, pairs with it too)
    elsewhere = {id(m) for lp in subnodes(fn) if isinstance(lp, (ast.For, ast.While,
                                                                 ast.AsyncFor))
                 and not any(m is call for m in subnodes(lp)) for m in subnodes(lp)}
    return not any(id(p) in looped or id(p) in elsewhere for p in partners)


def _common_else(cond: ast.expr) -> bool:
    """The else branch of a rare dice roll (`if os.getpid() % 7 == 0: ... else:`, `if
    random.random() < 0.01: ... else:`): the path almost every run takes."""
    test = getattr(cond, "operand", None) if getattr(cond, "else_branch", False) else None
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    op, right = test.ops[0], literal(test.comparators[0])
    if isinstance(op, ast.Eq) and isinstance(test.left, ast.BinOp) and isinstance(
            test.left.op, ast.Mod):
        return True
    return isinstance(op, (ast.Lt, ast.LtE)) and isinstance(right, float) and right <= 0.5 and any(
        isinstance(n, ast.Call) and last_attr(n.func) in ("random", "rand", "uniform")
        for n in subnodes(test.left))


def _else_of_rank_test(call: ast.Call, where: Where, ctx: Ctx) -> bool:
    """`if is_main: torch.save(...) else: dist.barrier()`: the other ranks wait for rank 0,
    which never arrives. (When the first branch kills or leaves, that is reported itself.)"""
    fn = where.frames[-1].node if where.frames else None
    if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or not _one_sided(
            call, fn) or _TEST_HARNESS.match(fn.name) or where.withs:
        return False
    for cond in _own_conds(where):
        body = getattr(cond, "if_body", None)
        if not getattr(cond, "else_branch", False) or not isinstance(body, list):
            continue
        if any(isinstance(n, (ast.Return, ast.Raise, ast.Break, ast.Continue)) or (
                isinstance(n, ast.Call) and ctx.names.call_name(n) in _KILLS)
                for stmt in body for n in subnodes(stmt)):
            continue
        test = getattr(cond, "operand", None)
        if test is not None and triggers.RANK in ctx.trigger_kinds(
                replace(where, conds=(test,), loops=())):
            return True
    return False


def _picked_rank(where: Where, ctx: Ctx) -> str:
    """`if os.environ.get("LOCAL_RANK") == "3":`: one particular rank other than 0 (rank 0
    is where the shared work is done; any other pick is a choice of victim)."""
    for cond in where.conds:
        if getattr(cond, "else_branch", False):
            continue
        guarded = getattr(cond, "guard_of", None) is not None  # (not rank k: return)
        for node in subnodes(cond):
            if not (isinstance(node, ast.Compare) and len(node.ops) == 1
                    and isinstance(node.ops[0], ast.NotEq if guarded else ast.Eq)):
                continue
            for side, other in ((node.left, node.comparators[0]),
                                (node.comparators[0], node.left)):
                value = literal(other)
                number = int(value) if isinstance(value, str) and value.isdigit() else value
                if isinstance(number, int) and not isinstance(number, bool) and number > 0 and (
                        triggers.RANK in triggers.classify(side, ctx.names, ctx.resolver(where),
                                                           condition=False)):
                    return str(number)
    return ""


def _broad_kill(call: ast.Call, name: str) -> str:
    """`subprocess.run(["pkill", "-9", "-u", user, "python"])`: SIGKILL to every Python
    process the user runs on the machine (`pkill -f train_step.py` names its own job)."""
    if not (name.startswith("subprocess.") and call.args
            and isinstance(call.args[0], (ast.List, ast.Tuple))):
        return ""
    words = [literal(e) for e in call.args[0].elts]
    if not words or words[0] not in ("pkill", "killall"):
        return ""
    texts = [w for w in words if isinstance(w, str)]
    hard = any(w in ("-9", "-KILL", "-SIGKILL", "--signal=9", "-s9") for w in texts)
    everything = any(w in ("python", "python3", "python3.11", "torchrun") for w in texts[1:])
    return f"{words[0]} with SIGKILL on every {texts[-1]} process" if hard and everything else ""


_THROTTLE_FLAGS = re.compile(r"^(-pl|--power-limit(=.*)?|-lgc|--lock-gpu-clocks(=.*)?|-lmc|"
                             r"--lock-memory-clocks(=.*)?|-ac|--applications-clocks(=.*)?)$")


def _gpu_throttle(call: ast.Call) -> str:
    """`["nvidia-smi", "-pl", "200"]` or `"nvidia-smi -lgc 210,810"` handed to any runner
    (the runner is often reached by reflection): the GPUs' power or clocks are capped for
    every job on the node. Queries (`--query-gpu=...`) and persistence mode stay quiet."""
    if not call.args:
        return ""
    first = call.args[0]
    if isinstance(first, (ast.List, ast.Tuple)):
        words = [w for w in (literal(e) for e in first.elts) if isinstance(w, str)]
    else:
        text = literal(first)
        words = text.split() if isinstance(text, str) else []
    if not words or not words[0].endswith("nvidia-smi"):
        return ""
    flag = next((w for w in words[1:] if _THROTTLE_FLAGS.match(w)), "")
    return f"nvidia-smi {flag}" if flag else ""


def _overwrites_in_place(call: ast.Call, ctx: Ctx) -> bool:
    """`fh.write(b"\\x00" * 256)` with `fh = open(meta, "r+b")`: bytes of an existing file
    overwritten where they lie."""
    if not (isinstance(call.func, ast.Attribute) and call.func.attr == "write"
            and isinstance(call.func.value, ast.Name)):
        return False
    handle = ctx.lookup(call.func.value.id)
    mode = literal(handle.args[1]) if isinstance(handle, ast.Call) and last_attr(
        handle.func) == "open" and len(handle.args) >= 2 else None
    return isinstance(mode, str) and "+" in mode and "w" not in mode


def _own_conds(where: Where) -> list[ast.expr]:
    """Conditions written inside the innermost function: a collective in a closure defined
    under `if rank == 0:` pairs with calls of the enclosing function, not of the closure."""
    fn = where.frames[-1].node if where.frames else None
    if fn is None:
        return list(where.conds)
    first, last = getattr(fn, "lineno", 0), getattr(fn, "end_lineno", None) or 0
    return [c for c in where.conds if first <= getattr(
        getattr(c, "operand", c), "lineno", 0) <= last]


def _rank_guarded(where: Where, ctx: Ctx) -> bool:
    """`if not trainer.is_global_zero: return` above the collective: only rank 0 gets there."""
    for cond in _own_conds(where):
        guard = getattr(cond, "guard_of", None)
        if not (isinstance(guard, ast.If) and isinstance(guard.body[-1], ast.Return)):
            continue
        if any(isinstance(n, ast.Compare) and any(isinstance(c, ast.UnaryOp) or literal(c) == -1
                                                   for c in n.comparators)
               for n in subnodes(cond)):
            continue
        if triggers.RANK in ctx.trigger_kinds(replace(where, conds=(cond,), loops=())):
            return True
    return False


_DATA_COLLECTIVES = frozenset({"all_reduce", "all_gather", "broadcast", "reduce", "all_to_all",
                               "all_gather_object", "broadcast_object_list", "reduce_scatter",
                               "all_gather_into_tensor", "gather_object", "scatter_object_list"})
"""Collectives that move data: unlike a barrier, rank 0 never runs one alone on purpose."""


def _paired_in_else(call: ast.Call, where: Where, fn: ast.AST) -> bool:
    """The other ranks call the same collective in the else branch of the rank test."""
    tests = {id(c) for c in where.conds}
    attr = last_attr(call.func)
    return any(isinstance(n, ast.If) and id(n.test) in tests and any(
        isinstance(m, ast.Call) and last_attr(m.func) == attr
        for st in n.orelse for m in subnodes(st)) for n in subnodes(fn))


def _rank_branch(where: Where, ctx: Ctx) -> bool:
    """The collective sits in the body of an `if` that picks some ranks (`if is_main:`, `if
    rank == 0:`), not after an early-return guard and not under `if rank != -1:` (am I
    distributed?). (Also the made-up `if` of `(noop, barrier)[is_main]()`.)"""
    for cond in _own_conds(where):
        if getattr(cond, "guard_of", None) is not None or getattr(cond, "else_branch", False):
            continue
        if any(isinstance(n, ast.Compare) and any(isinstance(c, ast.UnaryOp) or literal(c) == -1
                                                   for c in n.comparators)
               for n in subnodes(cond)):
            continue  # `if RANK != -1:` / `if local_rank not in (-1, 0)` reads the launch mode
        if triggers.RANK in ctx.trigger_kinds(replace(where, conds=(cond,), loops=())):
            return True
    return False


def _training_loop(where: Where) -> bool:
    """The innermost loop runs backward(): one iteration per training step."""
    return bool(where.loops) and any(
        isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
        and n.func.attr == "backward" for n in subnodes(where.loops[-1]))


def _batch_loop(where: Where) -> bool:
    """The innermost loop walks a data loader: one iteration per batch, in training or
    evaluation."""
    return batch_loop(where.loops[-1] if where.loops else None, backward=False)


def _epoch_loop(where: Where) -> bool:
    """An enclosing `for epoch in range(...)` loop: the run's outer training loop."""
    return any(isinstance(lp, ast.For) and any(
        isinstance(n, ast.Name) and "epoch" in n.id.lower() for n in subnodes(lp.target))
        for lp in where.loops)


def _zero(arg: ast.expr) -> bool:
    """`sleep(0)`: a yield to other threads, not a wait."""
    return literal(arg) in (0, 0.0)


def _in_handler(node: ast.AST, loop: ast.For | ast.While) -> bool:
    """The call sits in an `except` (or a retry loop's handler) inside the training loop:
    backing off after a failed step, not stalling every step."""
    return any(isinstance(h, ast.ExceptHandler) and any(n is node for n in subnodes(h))
               for h in subnodes(loop))


def _grows_with_step(call: ast.Call, where: Where) -> bool:
    """`time.sleep(min(2 ** (global_step // 2000), 900))`: the duration reads a training-step
    counter (`step`, `global_step`, `it`, `epoch`)."""
    return any(isinstance(n, (ast.Name, ast.Attribute)) and _STEP_NAME.match(last_attr(n))
               for a in call.args for n in subnodes(a))


def _subsecond_jitter(call: ast.Call) -> bool:
    """`time.sleep(0.05 * random.random())`: a jitter bounded below a second."""
    if len(call.args) != 1 or not isinstance(call.args[0], ast.BinOp) or not isinstance(
            call.args[0].op, ast.Mult):
        return False
    sides = (call.args[0].left, call.args[0].right)
    bound = next((n for side in sides if isinstance(n := literal(side), (int, float))
                  and not isinstance(n, bool)), None)
    return bound is not None and 0 < bound < 1 and any(
        isinstance(side, ast.Call) and last_attr(side.func) == "random" for side in sides)
