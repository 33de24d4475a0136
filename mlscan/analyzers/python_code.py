"""Training-code analyzer: Python files and notebook code cells -> MLS1xx/MLS3xx findings.

Cost per file: one C-speed byte prefilter (files without any relevant token are skipped),
one `ast.parse` and one walk running every check (see mlscan.checks.walker). We parse with
`ast`, not libcst: measured on this machine libcst's parser alone reads ~11k lines/s, slower
than bandit's whole run (~18k lines/s); `ast` parses ~55k lines/s and carries line numbers,
and the checks need no concrete syntax.

Notebooks: every code cell is parsed on its own (IPython magics and shell escapes blanked,
line numbers kept) with one shared import table, so `import torch` in cell 1 resolves in
cell 5. Findings carry `member="cell[N]"` (N = index in the notebook's `cells` array) and a
line relative to that cell.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Iterator

from mlscan.analyzers.base import Source, register
from mlscan.context import Budget
from mlscan.errors import LimitExceeded, MalformedError
from mlscan.kinds import Kind
from mlscan.model import Finding
from mlscan.rulesets.meta import MALFORMED

PREFILTER = re.compile(
    rb"load|seed|rng_state|set_state|setstate|hook|\.data\b|\.grad\b|\.weight\b|\.bias\b"
    rb"|param|state_dict|exp_avg|momentum_buffer|kill|exit|abort|sleep|process_group|barrier"
    rb"|all_reduce|signal|scalar|wandb|mlflow|metric|__getitem__|collate|__call__"
    rb"|trust_remote_code|hub|download|pickle|unsafe|safe_mode|SystemExit|setattr"
    rb"|torch\.|optim|DataLoader|distributed|random|datetime|hostname|getuser|getlogin|environ"
    rb"|getenv|world_size|\.log\("
    # ML libraries and result files: metric falsification and label poisoning need no
    # dangerous API at all (`v["acc"] = ...` before a json.dump).
    rb"|torch|numpy|pandas|sklearn|transformers|tensorflow|keras|jax|json\.dump|to_csv"
    rb"|accuracy|eval|exec|builtins|urlopen|requests|socket|subprocess|authorized|\.ssh"
    rb"|\.pth\b|customize|label|__import__|import_module"
)
_MAGIC = re.compile(r"^\s*[%!]")


def _read_text(src: Source, budget: Budget) -> bytes:
    limit = budget.limits.max_text_bytes
    if src.size is not None and src.size > limit:
        raise LimitExceeded(f"file of {src.size} bytes exceeds the {limit}-byte limit for code")
    data = src.stream.read(limit + 1)
    if len(data) > limit:
        raise LimitExceeded(f"file exceeds the {limit}-byte limit for code")
    return data


def _decode(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedError(f"not valid UTF-8 ({exc.reason} at byte {exc.start})",
                             offset=exc.start) from None
    return text


def _parse(text: str, what: str) -> ast.Module:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences are not our business
            return ast.parse(text)
    except SyntaxError as exc:
        raise MalformedError(f"{what}: Python syntax error at line {exc.lineno}: "
                             f"{exc.msg}") from None
    except ValueError as exc:  # null bytes
        raise MalformedError(f"{what}: cannot parse: {exc}") from None


def analyze_text(text: str, path: str, member: str | None = None, *,
                 prefiltered: bool = False, disk_path: str | None = None) -> list[Finding]:
    """Findings for one Python source text (also used by tests and benchmarks). `disk_path`
    is the file on disk when `path` (the display path) is not where sibling modules are."""
    if not prefiltered and not PREFILTER.search(text.encode("utf-8", "surrogatepass")):
        return []
    from mlscan.checks import normalize
    from mlscan.checks.context import Ctx
    from mlscan.checks.walker import walk

    tree = _parse(text, "Python source")
    flow = normalize.normalize(tree, text) if normalize.wanted(text) else None
    ctx = Ctx(path, member, text.splitlines(), disk_path)
    if flow is not None:  # (indexed before normalize's rewrites: statements, not values)
        flow.path = ctx.disk_path
        ctx.share_flow(flow)
    walk(tree, ctx)
    return ctx.finish()


@register(Kind.PYTHON)
def analyze_python(src: Source, budget: Budget) -> Iterator[Finding]:
    data = _read_text(src, budget)
    if not PREFILTER.search(data):
        return
    text = _decode(data)
    disk = str(src.fs_path) if src.fs_path is not None and src.member is None else None
    yield from analyze_text(text, src.path, src.member, prefiltered=True, disk_path=disk)


def notebook_cells(data: bytes) -> list[tuple[int, str]]:
    """(cell index, code with magics blanked) for every code cell of an .ipynb file."""
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise MalformedError(f"notebook is not valid JSON: {exc}") from None
    cells = doc.get("cells") if isinstance(doc, dict) else None
    if not isinstance(cells, list):
        raise MalformedError("notebook has no 'cells' list")
    out = []
    for index, cell in enumerate(cells):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(s for s in source if isinstance(s, str))
        if not isinstance(source, str):
            raise MalformedError(f"notebook cell {index} has a non-text source")
        lines = ["" if _MAGIC.match(line) else line for line in source.split("\n")]
        out.append((index, "\n".join(lines)))
    return out


@register(Kind.NOTEBOOK)
def analyze_notebook(src: Source, budget: Budget) -> Iterator[Finding]:
    from mlscan.checks import normalize
    from mlscan.checks.context import Ctx
    from mlscan.checks.walker import walk

    data = _read_text(src, budget)
    if not PREFILTER.search(data):
        return
    _decode(data)
    shared: Ctx | None = None
    for index, code in notebook_cells(data):
        member = f"cell[{index}]" if src.member is None else f"{src.member}!cell[{index}]"
        try:
            tree = _parse(code, f"notebook cell {index}")
            if normalize.wanted(code):
                normalize.normalize(tree, code)
        except MalformedError as exc:
            yield MALFORMED.finding(src.path, f"{src.name}: {exc.message}", member=member,
                                    evidence=exc.message)
            continue
        ctx = Ctx(src.path, member, code.splitlines(),
                  str(src.fs_path) if src.fs_path is not None and src.member is None else None)
        if shared is not None:
            ctx.names = shared.names  # imports carry over between cells
            ctx.defs = shared.defs
            ctx.registered = shared.registered
        shared = ctx
        walk(tree, ctx)
        yield from ctx.finish()
        budget.check_time()
