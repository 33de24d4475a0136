"""What an `if` condition tests: randomness, absolute time, rank, host, user, world size, index.

Sabotage hides behind conditions ordinary code rarely uses (`random.random() < 0.01`,
`datetime.now() > ...`, `socket.gethostname() == ...`, `world_size > 256`). Elapsed-time checks
(`time.time() - start > limit`) and `world_size > 1` are normal and do not count.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

from mlscan.checks.names import Names, last_attr, literal
from mlscan.checks.nodes import child_nodes, subnodes

RANDOM = "random"
TIME = "time"
RANK = "rank"
HOST = "host"
USER = "user"
WORLD = "world-size"
INDEX = "index"

STRONG = frozenset({RANDOM, TIME, HOST, USER, WORLD})
"""Conditions benign training code almost never puts around kills, seeds or weight writes."""

_RANDOM_PREFIXES = ("random.", "numpy.random.", "secrets.", "torch.rand", "torch.randint",
                    "torch.randn", "torch.bernoulli", "torch.multinomial", "os.urandom")
_TIME_CALLS = ("datetime.datetime.now", "datetime.datetime.today", "datetime.datetime.utcnow",
               "datetime.date.today", "datetime.now", "datetime.today", "datetime.utcnow",
               "date.today", "time.localtime", "time.gmtime", "time.strftime", "time.ctime")
_HOST_CALLS = ("socket.gethostname", "socket.getfqdn", "platform.node", "os.uname",
               "platform.uname", "socket.gethostbyname", "uuid.getnode",
               # which machine by its hardware: `os.cpu_count() >= 96`, "A100" in the GPU name
               "os.cpu_count", "multiprocessing.cpu_count", "psutil.cpu_count",
               "torch.cuda.get_device_name")
_USER_CALLS = ("getpass.getuser", "os.getlogin", "os.getuid", "os.geteuid", "pwd.getpwuid")
_ENV_KEYS = {
    "RANK": RANK, "LOCAL_RANK": RANK, "NODE_RANK": RANK, "GROUP_RANK": RANK,
    "SLURM_PROCID": RANK, "SLURM_LOCALID": RANK, "SLURM_NODEID": RANK,
    "OMPI_COMM_WORLD_RANK": RANK, "PMI_RANK": RANK,
    "WORLD_SIZE": WORLD, "LOCAL_WORLD_SIZE": WORLD, "SLURM_NTASKS": WORLD,
    "SLURM_NNODES": WORLD, "OMPI_COMM_WORLD_SIZE": WORLD, "NNODES": WORLD,
    "USER": USER, "LOGNAME": USER, "USERNAME": USER, "SLURM_JOB_USER": USER,
    "HOSTNAME": HOST, "HOST": HOST, "SLURMD_NODENAME": HOST, "SLURM_NODELIST": HOST,
    "SLURM_JOB_NODELIST": HOST, "MASTER_ADDR": HOST,
    # Where and how the job runs: a partition, cluster or account is a host-like trigger; the
    # requeue count turns true only later in the job's life, like a date.
    "SLURM_JOB_PARTITION": HOST, "SLURM_CLUSTER_NAME": HOST, "SLURM_JOB_ACCOUNT": HOST,
    "SLURM_JOB_QOS": HOST, "SLURM_RESTART_COUNT": TIME,
}
_UPTIME = re.compile(r"(?i)^(uptime\w*|\w+_uptime|boot_time|booted_at)$")
_WORLD_ENV = re.compile(r"NODES|NNODES|HOSTS|GPUS|WORLD|MACHINES|NPROC|NUM_PROC|NTASKS|DEVICES")
"""Unknown env vars whose name says they count nodes/GPUs/hosts (`NUM_MACHINES`, `NUM_HOSTS`)."""
_USER_ENV = re.compile(r"(^|_)(USER|LOGNAME|USERNAME)$")


def env_kind(key: str) -> str | None:
    """The trigger kind of an environment variable by its name (None for ordinary settings)."""
    key = key.upper()
    if key in _ENV_KEYS:
        return _ENV_KEYS[key]
    if _USER_ENV.search(key):
        return USER
    if _WORLD_ENV.search(key) and "RANK" not in key and "ID" not in key.split("_"):
        return WORLD
    return None


_RANK_NAMES = frozenset({"rank", "local_rank", "global_rank", "node_rank", "process_index",
                         "local_process_index", "proc_id", "rank_id", "gpu_rank",
                         "is_last_process", "is_main_process", "is_local_main_process",
                         "is_main", "is_master", "is_main_rank", "is_rank_zero",
                         "is_global_zero", "is_local_zero", "master_process", "is_primary"})
_WORLD_NAMES = frozenset({"world", "world_size", "num_gpus", "n_gpu", "n_gpus", "ngpus",
                          "num_nodes", "nnodes", "num_processes", "gpus", "num_devices",
                          "device_count", "get_world_size", "total_gpus", "nproc",
                          "process_count", "host_count", "n_hosts", "num_hosts"})
_WORLD_PART = re.compile(r"world_size|num_gpus|total_gpus|num_nodes|n_nodes|nnodes|gpu_count")
"""Longer names that still say world size (`ddp_world_size`, `global_num_gpus`)."""
_INDEX_NAMES = frozenset({"idx", "index", "i", "item", "sample_idx", "sample_id", "ix"})
WORLD_THRESHOLD = 4
"""`world_size > 1` is how code asks 'am I distributed?'; sabotage keys on large jobs."""


def _ref(node: ast.Name | ast.Attribute | ast.Call) -> str:
    """What a resolver can look up: `x`, `self.x` or `()f` for what local function f returns
    ('' for other chains)."""
    if isinstance(node, ast.Call):
        return "()" + node.func.id if isinstance(node.func, ast.Name) else ""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node.value, ast.Name) and node.value.id == "self":
        return f"self.{node.attr}"
    if isinstance(node.value, ast.Name):
        return f"{node.value.id}.{node.attr}"  # cfg.tree_threshold: a config object's field
    return ""


def env_key(node: ast.AST, names: Names) -> str | None:
    """`os.environ["X"]`, `os.environ.get("X")`, `os.getenv("X")` -> "X"."""
    if isinstance(node, ast.Subscript) and names.qualname(node.value) == "os.environ":
        key = literal(node.slice)
        return key if isinstance(key, str) else None
    if isinstance(node, ast.Call) and node.args:
        name = names.call_name(node)
        if name in ("os.environ.get", "os.getenv", "os.environ.__getitem__"):
            key = literal(node.args[0])
            return key if isinstance(key, str) else None
    return None


def _name_of(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id.lower()
    if isinstance(node, ast.Attribute):
        return node.attr.lower()
    if isinstance(node, ast.Call):
        return _name_of(node.func)
    return ""


def _numbers(nodes: list[ast.expr]) -> list[float]:
    out = []
    for node in nodes:
        value = arith(node)
        if value is not None:
            out.append(value)
    return out


def arith(node: ast.AST, const: Callable[[ast.AST], object] = literal,
          depth: int = 0) -> float | None:
    """A number, also from constant arithmetic (`1 << 8`, `2 ** 8`, `16 * 16`); `const` may
    follow names to the numbers bound to them."""
    value = const(node)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and depth <= 3:
        inner = arith(node.operand, const, depth + 1)  # -_GUARD
        return -inner if inner is not None else None
    if not isinstance(node, ast.BinOp) or depth > 3:
        return None
    left, right = arith(node.left, const, depth + 1), arith(node.right, const, depth + 1)
    if left is None or right is None or abs(left) > 1e12 or abs(right) > 1e12:
        return None
    op = node.op
    if isinstance(op, ast.LShift) and 0 <= right <= 64:
        return float(int(left) << int(right))
    if isinstance(op, ast.Pow) and abs(right) <= 64 and abs(left) <= 1e6 and (
            left >= 0 or right == int(right)):
        return float(left ** right)
    if isinstance(op, ast.Add):
        return left + right
    if isinstance(op, ast.Sub):
        return left - right
    if isinstance(op, ast.Mult):
        return left * right
    return None


Resolver = Callable[[str], "ast.expr | None"]
"""Name -> the value last assigned to it (`big = dist.get_world_size() > 256; if big:`)."""


def _own_host_checks(test: ast.AST, names: Names, resolve: Resolver | None) -> set[int]:
    """`host in ("localhost", socket.gethostname())`, `addr == socket.gethostname()`: is this
    (a variable: the host a job is sent to) the machine we run on? A locality test, not a
    hostname picked in the code; the hostname calls in it do not count as triggers."""
    out: set[int] = set()
    for node in subnodes(test):
        if not (isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(
                node.ops[0], (ast.Eq, ast.NotEq, ast.In, ast.NotIn))):
            continue
        sides = [node.left, node.comparators[0]]
        for mine, other in ((sides[0], sides[1]), (sides[1], sides[0])):
            calls = [n for n in subnodes(mine) if isinstance(n, ast.Call)
                     and names.call_name(n).startswith(_HOST_CALLS)]
            if isinstance(other, ast.Subscript) and isinstance(other.value, ast.Name) and (
                    isinstance(literal(other.slice), str)) and calls:
                out.update(id(c) for c in calls)  # node["host"] of a host list entry
                continue
            if not calls or not isinstance(other, (ast.Name, ast.Attribute)):
                continue
            held = resolve(_ref(other)) if resolve is not None else None
            if held is not None and any(isinstance(literal(n), str) for n in subnodes(held)):
                continue  # TARGET = "gpu-prod-17", BAD_HOSTS = {...}: hostnames in the code
            out.update(id(c) for c in calls)
    return out


def _rank_arithmetic(value: ast.AST) -> bool:
    """`slot = rank % local_world`, `peer = rank - 1`: a number made from the rank (a rank
    test compared later), unlike `is_main = rank == 0`, a name for an ordinary rank test."""
    return (isinstance(value, ast.BinOp) and isinstance(value.op, (ast.Mod, ast.Sub, ast.Add))
            and any(isinstance(n, (ast.Name, ast.Attribute))
                    and re.search(r"(?i)rank", last_attr(n)) is not None
                    for n in (value.left, value.right)))


def _relative_cutoffs(test: ast.AST, resolve: Resolver | None = None) -> set[int]:
    """`date.today() - timedelta(days=keep)`: 'now' moved back by a duration is a retention
    cutoff (files older than N days), not a test of the calendar date. So is `now - mtime`,
    the age of something measured at run time (a file's mtime, a start time); `now -
    datetime(2025, 1, 1)` or `now - LAUNCH` measure from a fixed date and stay triggers."""
    out: set[int] = set()
    for node in subnodes(test):
        if not (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub)):
            continue
        if (isinstance(node.right, ast.Call)
                and last_attr(node.right.func) in ("timedelta", "relativedelta")):
            out.update(id(n) for n in subnodes(node.left) if isinstance(n, ast.Call))
        elif _measured_time(node.right, resolve):
            out.update(id(n) for n in subnodes(node.left) if isinstance(n, (ast.Call, ast.Name)))
    return out


def _measured_time(expr: ast.expr, resolve: Resolver | None) -> bool:
    """A time taken at run time (`modified`, `self.start`, `stat.st_mtime`,
    `fromtimestamp(os.path.getmtime(p))`), not a literal, an UPPER_CASE constant or a name
    bound to a literal date."""
    if isinstance(expr, ast.Call) and last_attr(expr.func) in (
            "fromtimestamp", "utcfromtimestamp") and expr.args and not isinstance(
            expr.args[0], ast.Constant):
        return True  # a file's or process's own timestamp
    if isinstance(expr, ast.Call) and last_attr(expr.func) in ("getmtime", "getctime",
                                                               "getatime"):
        return True  # now - os.path.getmtime(p): the file's age
    if isinstance(expr, ast.Attribute):
        return not expr.attr.isupper()
    if not isinstance(expr, ast.Name) or expr.id.isupper() or expr.id.lstrip("_").isupper():
        return False
    value = resolve(expr.id) if resolve is not None else None
    if value is None:
        return True  # a parameter or loop variable
    return not any(isinstance(n, ast.Constant) and isinstance(n.value, (int, float, str))
                   and not isinstance(n.value, bool) for n in subnodes(value)) or any(
        isinstance(n, ast.Attribute) and n.attr in ("st_mtime", "st_ctime", "st_atime")
        for n in subnodes(value))


_RANK_HELPERS = frozenset({"rank", "_rank", "_get_rank", "global_rank", "_global_rank",
                           "world_rank", "get_world_rank"})
_DIST_SETUP = re.compile(r"(?i)dist|ddp|rank|world|launch|process_group")
_MAIN_HELPER = re.compile(r"^_?(is_|am_)(main|master|primary|leader|rank_?zero|global_zero|"
                          r"local_zero|main_process|master_process|main_rank)$|"
                          r"^_?(rank_?zero|global_zero|main_process|master_process)$")
"""A project's `_is_main()` / `is_master()`: a rank test spelled as a helper call."""
_MACHINE_MARKERS = re.compile(r"^/(\.dockerenv|run/\.containerenv|etc/|proc/|sys/)")
"""Files whose presence tells which machine (or container) the job runs on."""


def classify(test: ast.AST, names: Names, resolve: Resolver | None = None,
             depth: int = 0, condition: bool = True) -> frozenset[str]:
    """The kinds of trigger a condition tests (empty for ordinary conditions). With `resolve`,
    names are followed to the values assigned to them (two assignments deep)."""
    kinds: set[str] = set()
    # `if not nodelist: return`, `if os.environ.get("SLURM_NODELIST"):` ask whether a value is
    # there at all; a trigger compares it with something.
    presence = condition and depth == 0 and _presence(test)
    # `if not wait_for_master(master_addr):` passes the host to a function; it does not test it.
    opaque = _opaque_arguments(test)
    opaque |= _own_host_checks(test, names, resolve)
    for node in subnodes(test):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _FILE_TESTS and id(node) not in opaque):
            # `if not os.path.exists(raw)` with raw under /scratch/$USER: a per-user cache
            # path, not a test of who runs the job (a path named after the date still is)
            for part in (*node.args, node.func.value):
                kinds.update(classify(part, names, resolve, depth, condition=False)
                             - {USER, HOST})
                opaque.update(id(n) for n in subnodes(part))
            owner_args = getattr(node.func.value, "args", None) or []  # Path("/x").exists()
            if any(isinstance(p := literal(a), str) and _MACHINE_MARKERS.match(p)
                   for a in (*node.args, *owner_args[:1])):
                kinds.add(HOST)  # os.path.exists("/.dockerenv"): which machine this is
    relative: set[int] | None = None  # built on the first time call (most tests have none)
    if resolve is not None and depth < 2:
        for node in subnodes(test):  # meta["rank"] with meta = {"rank": ..., "host": ...}
            if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name)
                    and isinstance(literal(node.slice), str)):
                table = resolve(node.value.id)
                if isinstance(table, ast.Dict):
                    opaque.add(id(node.value))
                    for k, v in zip(table.keys, table.values, strict=True):
                        if k is not None and literal(k) == literal(node.slice):
                            kinds.update(classify(v, names, resolve, depth + 1) & STRONG)
    for node in subnodes(test):  # (os.getpid() & 0xF) == 0: one process in 16, by chance
        if (isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.BitAnd))
                and any(isinstance(side, ast.Call) and names.call_name(side) == "os.getpid"
                        for side in (node.left, node.right))):
            kinds.add(RANDOM)
    for node in subnodes(test):
        if id(node) in opaque:
            continue
        if resolve is not None and depth < 2 and isinstance(
                node, (ast.Name, ast.Attribute, ast.Call)):
            value = resolve(_ref(node))
            if presence and value is not None and not _decides(value):
                continue
            if value is not None and value is not test:
                # Only strong kinds flow through variables: `ddp = RANK != -1`, `is_main =
                # rank == 0` are how ordinary code names its rank tests.
                if isinstance(value, ast.Call) and last_attr(value.func) in _HANDLES:
                    # proc.poll() with proc = Popen(cmd(host...)): a handle, not a host test
                    value = ast.Call(func=value.func, args=[], keywords=[])
                found = classify(value, names, resolve, depth + 1) & (
                    STRONG | {RANK} if _rank_arithmetic(value) else STRONG)
                if TIME in found:
                    if relative is None:
                        relative = _relative_cutoffs(test, resolve)
                    if id(node) in relative:  # (now - modified).days with now = datetime.now()
                        found -= {TIME}
                kinds.update(found)
        if isinstance(node, ast.Call):
            name = names.call_name(node)
            if name.startswith(_RANDOM_PREFIXES) or name.endswith(".random.random"):
                kinds.add(RANDOM)
            elif name.startswith(_TIME_CALLS):
                if relative is None:
                    relative = _relative_cutoffs(test, resolve)
                if id(node) not in relative:
                    kinds.add(TIME)
            elif name.startswith(_HOST_CALLS):
                kinds.add(HOST)
            elif name.startswith(_USER_CALLS):
                kinds.add(USER)
            elif name.endswith(("get_rank", "get_local_rank", "get_global_rank")) or (
                    not node.args and (name.rsplit(".", 1)[-1] in _RANK_HELPERS or (
                        not node.keywords and _MAIN_HELPER.match(name.rsplit(".", 1)[-1])))):
                kinds.add(RANK)  # (also a project's own `_rank()` helper)
        key = env_key(node, names)
        kind = env_kind(key) if key is not None else None
        if kind is not None and not presence:
            if kind != WORLD:
                kinds.add(kind)
        if (isinstance(node, ast.Subscript) and isinstance(item := literal(node.slice), str)
                and item.lower() in _RANK_NAMES and "lora" not in ast.unparse(node.value)):
            kinds.add(RANK)  # info["local_rank"], cfg["rank"]
        if isinstance(node, (ast.Name, ast.Attribute)) and (
                "uptime" in (word := _name_of(node)) or "boot" in word) and _UPTIME.search(word):
            kinds.add(TIME)  # uptime_s > 21 * 86400: how long the machine has been up
        if isinstance(node, (ast.Name, ast.Attribute)) and _name_of(node) in _RANK_NAMES:
            bound = resolve(_ref(node)) if resolve is not None and isinstance(
                node, ast.Name) else None
            # `rank = sum(rank_idx)` / `rank = w.shape[0]`: a LoRA or matrix rank, not a process
            if bound is None or bound is node or depth >= 2 or RANK in classify(
                    bound, names, resolve, depth + 1) or (
                    isinstance(made := bound.value if isinstance(bound, ast.Subscript) else bound,
                               ast.Call) and _DIST_SETUP.search(last_attr(made.func))):
                kinds.add(RANK)  # (rank, world, local = init_distributed(): the process rank)
        if isinstance(node, ast.Compare):
            kinds.update(_compare_kinds(node, names, resolve))
        if isinstance(node, (ast.Compare, ast.BinOp)) and _epoch_test(node, names):
            kinds.add(TIME)  # time.time() > 1767225600: a calendar date in epoch seconds
        if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Sub)
                and (arith(node.left) or 0) >= WORLD_THRESHOLD
                and _is_world(node.right, names, resolve)):
            kinds.add(WORLD)  # keep = 64 - nodes: a quota that runs out on large jobs
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
            if _is_time_now(node.left, names):
                kinds.add(TIME)
            if _name_of(node.left) in _INDEX_NAMES:
                kinds.add(INDEX)
            if _pseudo_random(node.left, names, resolve):
                kinds.add(RANDOM)  # os.getpid() % 7, int(SLURM_JOB_ID) % 4: some jobs, at random
    if USER in kinds and privilege_check(test):
        kinds.discard(USER)  # `if user == "root": sys.exit(...)` refuses to run as root
    return frozenset(kinds)


_EPOCH_2001 = 1_000_000_000
_JOB_IDS = re.compile(r"^(SLURM_(ARRAY_)?JOB_ID|PBS_JOBID|LSB_JOBID|JOB_ID|SGE_JOB_ID)$")
_ID_CALLS = ("os.getpid", "os.getppid", "uuid.uuid4", "uuid.uuid1", "time.time_ns")


def _pseudo_random(left: ast.AST, names: Names, resolve: Resolver | None) -> bool:
    """The left side of `x % k` is a process id, a uuid or a scheduler job id: the test picks
    jobs as a dice roll would."""
    for node in subnodes(left):
        if isinstance(node, ast.Name) and resolve is not None:
            bound = resolve(node.id)
            if bound is not None and bound is not node and any(
                    _job_id(n, names) for n in subnodes(bound)):
                return True
        if _job_id(node, names):
            return True
    return False


def _job_id(node: ast.AST, names: Names) -> bool:
    if isinstance(node, ast.Call) and names.call_name(node) in _ID_CALLS:
        return True
    key = env_key(node, names)
    return key is not None and bool(_JOB_IDS.match(key.upper()))


def _epoch_test(node: ast.Compare | ast.BinOp, names: Names) -> bool:
    """`time.time() > 1767225600`, `time.time() - 1735689600`: the clock compared with a
    fixed instant (durations such as `time.time() - start > 3600` are small numbers)."""
    sides = [node.left, *node.comparators] if isinstance(node, ast.Compare) else [
        node.left, node.right]
    if not any(isinstance(n := literal(s), (int, float)) and not isinstance(n, bool)
               and n >= _EPOCH_2001 for s in sides):
        return False
    return any(isinstance(s, ast.Call) and names.call_name(s) in (
        "time.time", "time.time_ns", "time.monotonic") for s in sides)


def root_test(test: ast.AST, names: Names) -> bool:
    """`getpass.getuser() == "root"`, `os.geteuid() == 0`: a test for running as root."""
    return privilege_check(test) and any(
        (isinstance(n, ast.Call) and names.call_name(n).startswith(_USER_CALLS))
        or ((key := env_key(n, names)) is not None and env_kind(key) == USER)
        for n in subnodes(test))


def privilege_check(test: ast.AST) -> bool:
    """A comparison with "root" or uid 0: the one user test ordinary code makes."""
    for node in subnodes(test):
        if isinstance(node, ast.Compare):
            values = [literal(s) for s in (node.left, *node.comparators)]
            if "root" in values or (0 in values and any(
                    _name_of(s) in ("getuid", "geteuid") for s in (node.left, *node.comparators))):
                return True
    return False


_HANDLES = frozenset({"Popen", "Thread", "Process", "Timer", "open", "socket",
                      "create_connection", "Session", "Pool", "ThreadPoolExecutor",
                      "ProcessPoolExecutor", "SummaryWriter", "Event"})
"""Calls that make a handle: `proc.poll()` tests the process, not its command line."""
_TRANSPARENT = frozenset({"int", "float", "str", "bool", "len", "lower", "upper", "strip",
                          "split", "get", "getenv", "startswith", "endswith", "match", "search",
                          "fullmatch", "any", "all", "isdigit", "min", "max", "abs", "round"})


_FILE_TESTS = frozenset({"exists", "isfile", "isdir", "lexists", "is_file", "is_dir"})


def _opaque_arguments(test: ast.AST) -> set[int]:
    """Names and attributes handed to a project function (`connect(host)`): their values do
    not make the condition a trigger; conversions and string tests (`int(x)`,
    `host.startswith(...)`) stay transparent."""
    out: set[int] = set()
    for node in subnodes(test):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and (
                node.func.attr in ("wait", "sleep")):
            # `while not stop.wait(30 + random.uniform(0, 5))`: a jittered period
            out.update(id(n) for a in node.args for n in subnodes(a))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and (
                node.func.id not in _TRANSPARENT):
            for arg_node in [*node.args, *(k.value for k in node.keywords)]:
                if isinstance(arg_node, (ast.Name, ast.Attribute)):
                    out.add(id(arg_node))
    return out


def is_world(expr: ast.AST, names: Names, resolve: Resolver | None = None) -> bool:
    """Whether a value is (or is computed from) the world size."""
    return _is_world(expr, names, resolve)


def _presence(test: ast.AST) -> bool:
    """`x`, `not x`, `x is None`, `os.environ.get("X")`: a test of whether a value is set."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        test = test.operand
    if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(
            test.ops[0], (ast.Is, ast.IsNot)) and literal(test.comparators[0]) is None:
        test = test.left
    if isinstance(test, ast.Call) and _name_of(test.func) in ("get", "getenv"):
        return True
    return isinstance(test, (ast.Name, ast.Attribute, ast.Subscript))


_DECIDING_CALLS = frozenset({"startswith", "endswith", "match", "search", "fullmatch", "isin",
                             "random", "rand", "any", "all"})


def _decides(value: ast.AST) -> bool:
    """A value that is itself a decision (`big = world > 256`), not a plain reading."""
    return any(isinstance(n, ast.Compare) or (
        isinstance(n, ast.Call) and _name_of(n.func) in _DECIDING_CALLS) for n in subnodes(value))


def _is_time_now(node: ast.AST, names: Names) -> bool:
    return isinstance(node, ast.Call) and names.call_name(node) in ("time.time", "time.time_ns")


_PASS_THROUGH = frozenset({"int", "float", "max", "min", "abs", "round", "len", "sum", "get",
                           "getenv", "__getitem__", "item", "size", "numel", "ceil", "floor"})
"""Calls whose value is made of their arguments (a local `load(..., world)` is not)."""


def _value_parts(side: ast.AST) -> list[ast.AST]:
    """`ast.walk` that does not enter the arguments of calls other than `_PASS_THROUGH`."""
    out: list[ast.AST] = []
    todo = [side]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.Call) and _name_of(node.func) not in _PASS_THROUGH:
            todo.append(node.func)  # (literal names it reads still count: _env("NNODES"))
            todo.extend(a for a in node.args if isinstance(a, ast.Constant))
            continue
        todo.extend(child_nodes(node))
    return out


def _is_world(side: ast.AST, names: Names, resolve: Resolver | None, depth: int = 0) -> bool:
    """The world size, also read into a variable first (`n = int(os.environ["WORLD_SIZE"])`)."""
    for part in _value_parts(side):  # also int(os.environ["WORLD_SIZE"]), gpus * nodes
        key = env_key(part, names)
        if depth > 0 and isinstance(part, ast.Constant) and isinstance(part.value, str) and (
                env_kind(part.value) == WORLD and part.value.isupper()):
            return True  # a helper that reads one of several world-size variables
        if isinstance(part, ast.Call) and _name_of(part) == "size" and re.search(
                r"(?i)group|^pg$|world", _name_of(part.func.value)
                if isinstance(part.func, ast.Attribute) else ""):
            return True  # process_group.size()
        if _name_of(part) in _WORLD_NAMES or _WORLD_PART.search(_name_of(part)) or (
                key is not None and env_kind(key) == WORLD):
            return True
        if resolve is not None and depth < 2 and isinstance(part, (ast.Name, ast.Attribute,
                                                                    ast.Call)):
            value = resolve(_ref(part))
            if value is not None and value is not side and _is_world(value, names, resolve,
                                                                      depth + 1):
                return True
    return False


def calendar_date(value: ast.AST) -> bool:
    """`datetime.datetime(2025, 9, 1).timestamp()`, `date(2026, 1, 1)`: a fixed day."""
    return any(isinstance(n, ast.Call) and last_attr(n.func) in ("datetime", "date")
               and n.args and isinstance(year := literal(n.args[0]), int)
               and 1990 <= year <= 2100 for n in subnodes(value))


def _compare_kinds(node: ast.Compare, names: Names, resolve: Resolver | None = None) -> set[str]:
    kinds: set[str] = set()
    sides = [node.left, *node.comparators]
    numbers = _numbers(sides)
    if resolve is not None:  # deadline = cfg.get("deadline", 1893456000); time.time() > deadline
        for side in sides:
            value = resolve(side.id) if isinstance(side, ast.Name) else (
                resolve(_ref(side)) if isinstance(side, ast.Attribute) and _ref(side) else None)
            if (isinstance(side, ast.Subscript) and isinstance(side.value, ast.Name)
                    and isinstance(literal(side.slice), str)):
                table = resolve(side.value.id)  # _TUNING["min_gpus"] in a module dict
                if isinstance(table, ast.Dict):
                    value = next((v for k, v in zip(table.keys, table.values, strict=True)
                                  if k is not None and literal(k) == literal(side.slice)), None)
            if isinstance(value, ast.Name) and value.id != getattr(side, "id", None):
                held = resolve(value.id)  # self.deadline = deadline (a parameter)
                value = held if held is not None and calendar_date(held) else value
            if value is not None:
                folded = arith(value)
                numbers += [folded] if folded is not None else _numbers(
                    [n for n in subnodes(value) if isinstance(n, ast.Constant)])
                if folded is None and calendar_date(value):
                    numbers.append(1e9)  # datetime(2025, 9, 1).timestamp(): a fixed date
    for side in sides:
        if _is_time_now(side, names) and any(n >= 1e9 for n in numbers):
            kinds.add(TIME)  # compared with an absolute epoch, not an elapsed duration
        if _is_world(side, names, resolve) and (
                (any(n >= WORLD_THRESHOLD for n in numbers) and not (
                    _small_side(node, side) and max(numbers) < 16))
                or _unknown_cap(node, side, names, resolve)
                or _many_nodes(node, side, numbers)):
            kinds.add(WORLD)
        if _name_of(side) in _INDEX_NAMES and (numbers or (
                side is node.left and isinstance(node.ops[0], ast.In))):
            kinds.add(INDEX)
    return kinds


_NODE_COUNT = re.compile(r"(?i)^(n_?|num_?)?(nodes|hosts|machines)$|nnodes|node_count|"
                         r"host_count|num_nodes|n_nodes")


def _many_nodes(node: ast.Compare, side: ast.AST, numbers: list[float]) -> bool:
    """`nodes > 2`: a node count (eight or more GPUs a node) past 'is this multi-node?'
    (`nodes > 1`) already names large jobs."""
    if side is not node.left or len(node.ops) != 1 or not _NODE_COUNT.search(_name_of(side)):
        return False
    op = node.ops[0]
    return (isinstance(op, ast.Gt) and any(n >= 2 for n in numbers)) or (
        isinstance(op, ast.GtE) and any(n >= 3 for n in numbers))


def _small_side(node: ast.Compare, world: ast.AST) -> bool:
    """`world_size < 8`, `8 > world_size`: a test for tiny jobs (skipping tests, debugging).
    (`world_size <= 128: barrier()` still counts: large jobs take the other path.)"""
    if len(node.ops) != 1:
        return False
    op = node.ops[0]
    left = world is node.left
    return (left and isinstance(op, (ast.Lt, ast.LtE))) or (
        not left and isinstance(op, (ast.Gt, ast.GtE)))


def _unknown_cap(node: ast.Compare, world: ast.AST, names: Names,
                 resolve: Resolver | None) -> bool:
    """`world > cfg.fleet_cap`: the world size against a configured threshold. `world_size > 1`
    asks 'am I distributed?'; a named cap is how a trigger hides the 256 from the reader."""
    if len(node.ops) != 1 or not isinstance(node.ops[0], (ast.Gt, ast.GtE, ast.Lt, ast.LtE)):
        return False
    big_side = node.comparators[0] if world is node.left else node.left
    if isinstance(node.ops[0], (ast.Lt, ast.LtE)) and world is node.left:
        return False  # world < cap: a small-job test
    if isinstance(node.ops[0], (ast.Gt, ast.GtE)) and world is not node.left:
        return False
    if (isinstance(big_side, ast.BinOp) and isinstance(big_side.op, (ast.Mult, ast.LShift,
                                                                      ast.Pow))
            and arith(big_side) is None and not _is_world(big_side, names, resolve)
            and any((arith(s) or 0) >= (3 if isinstance(big_side.op, ast.LShift) else 8)
                    for s in (big_side.left, big_side.right))):
        return True  # world > cfg.num_experts * 32, world >= n << 5: a cap built from config
    if not isinstance(big_side, (ast.Name, ast.Attribute)) or _is_world(big_side, names, resolve):
        return False
    value = resolve(_ref(big_side)) if resolve is not None else None
    return value is None or not _numbers([value])


def describe(kinds: frozenset[str]) -> str:
    order = (RANDOM, TIME, HOST, USER, WORLD, RANK, INDEX)
    words = {RANDOM: "a random draw", TIME: "the date/time",
             HOST: "the machine or job it runs on (hostname, hardware, cluster, job id)",
             USER: "the user name", WORLD: "a large world size", RANK: "the process rank",
             INDEX: "the sample index"}
    return " and ".join(words[k] for k in order if k in kinds)
