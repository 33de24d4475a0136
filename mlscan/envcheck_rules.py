"""MLS5xx: integrity of the installed Python environment (`mlscan env`).

Installed files are compared with the sha256 their distribution recorded in `RECORD`; every way
code runs at interpreter start-up (.pth import lines, sitecustomize, environment variables) is
listed.
"""

from __future__ import annotations

from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

_RECORD_SPEC = "https://packaging.python.org/en/latest/specifications/recording-installed-packages/"
_SITE_DOCS = "https://docs.python.org/3/library/site.html"

def _startup_vars_text() -> str:
    from mlscan.envcheck_hooks import STARTUP_VARS

    parts = []
    for sev in (Severity.HIGH, Severity.MEDIUM, Severity.LOW):
        names = ", ".join(f"`{n}`" for n, (s, _) in STARTUP_VARS.items() if s is sev)
        parts.append(f"{sev.value}: {names}")
    return "; ".join(parts) + "."


FILE_MODIFIED = register(
    Rule(
        code="MLS501",
        name="installed-file-modified",
        severity=Severity.HIGH,
        confidence=Confidence.HIGH,
        summary="An installed file no longer matches the sha256 recorded in its RECORD.",
        doc=RuleDoc(
            what="Recomputes the sha256 of every file a distribution lists in its `RECORD` and "
            "reports files whose hash or size differ. Python code and native extensions inside "
            "well-known ML packages (torch, numpy, transformers, accelerate, safetensors, jax, "
            "tensorflow, scipy, scikit-learn, ...) are critical.",
            why="Editing the installed framework is invisible to any review of the training "
            "repository: a changed line in `torch/optim/adamw.py` or `torch/random.py` alters "
            "every run on the machine. Installers record a hash for every file they write, so a "
            "mismatch means the file was changed after installation.",
            example="site-packages/torch/optim/adamw.py: sha256 differs from RECORD "
            "(one line added to step())",
            use_instead="Reinstall the distribution (`pip install --force-reinstall --no-deps "
            "torch==<version>`). If you patched it on purpose, accept the patched files with "
            "`mlscan env --lock FILE` and check them with `--verify-lock FILE`.",
            references=(_RECORD_SPEC,),
        ),
        cwe=494,
    )
)

FILE_MISSING = register(
    Rule(
        code="MLS502",
        name="installed-file-missing",
        severity=Severity.MEDIUM,
        confidence=Confidence.HIGH,
        summary="A file listed in a distribution's RECORD is missing.",
        doc=RuleDoc(
            what="Reports files a distribution's `RECORD` lists that no longer exist. Missing "
            "Python code inside well-known ML packages is high.",
            why="Deleting a module can disable a check or a safety feature, or make an "
            "import fall back to another (attacker-controlled) location on `sys.path`.",
            example="site-packages/numpy/random/_pickle.py: listed in RECORD, not on disk",
            use_instead="Reinstall the distribution.",
            references=(_RECORD_SPEC,),
        ),
        cwe=494,
    )
)

FILE_ADDED = register(
    Rule(
        code="MLS503",
        name="unlisted-code-added",
        severity=Severity.HIGH,
        confidence=Confidence.MEDIUM,
        summary="Python code, a native library or a .pth file sits in site-packages without "
        "belonging to any installed distribution.",
        doc=RuleDoc(
            what="Walks the folders that installed distributions own and the top of "
            "site-packages, and reports `.py`, `.pyc` (outside `__pycache__`), `.so`/`.pyd` and "
            "`.pth` files that no `RECORD` lists (critical inside well-known ML packages), and "
            "files added to a `.dist-info` folder after installation (`entry_points.txt`: "
            "high, plugin hosts load what it names; anything else: low).",
            why="A dropped module inside a trusted package (`torch/_patch.py` imported from a "
            "modified `__init__`) or a sourceless `.pyc` next to the real module runs with the "
            "package's trust and survives code review of the project.",
            example="site-packages/torch/utils/data/_sampler_fix.py: not listed in any RECORD",
            use_instead="Remove the file, or reinstall the owning distribution. Accept files "
            "you added on purpose with `mlscan env --lock FILE`.",
            references=(_RECORD_SPEC,),
        ),
        cwe=506,
    )
)

UNVERIFIABLE = register(
    Rule(
        code="MLS504",
        name="distribution-unverifiable",
        severity=Severity.MEDIUM,
        confidence=Confidence.HIGH,
        summary="An installed distribution cannot be verified: editable install, no RECORD, "
        "or RECORD entries without hashes.",
        doc=RuleDoc(
            what="Reports distributions whose files cannot be checked against hashes: editable "
            "(development) installs, legacy `.egg-info` installs and `.egg` folders, "
            "distributions without a `RECORD` and `RECORD` files with code entries that carry "
            "no hash.",
            why="Unverifiable is not clean: an editable install runs whatever is in its source "
            "folder now, and a distribution without hashes can be changed without trace.",
            example="mlscan 0.1.0: editable install from file:///work/main",
            use_instead="Install a built wheel (`pip install .` instead of `pip install -e .`) "
            "where integrity matters, or review the source folder.",
            references=(_RECORD_SPEC,),
        ),
        cwe=353,
        tags=("security", "integrity"),
    )
)

PTH_EXEC = register(
    Rule(
        code="MLS505",
        name="pth-executes-code",
        severity=Severity.HIGH,
        confidence=Confidence.MEDIUM,
        summary="A .pth file in a site directory runs code at every interpreter start-up.",
        doc=RuleDoc(
            what="Reads every `.pth` file in the environment's site directories and reports "
            "lines starting with `import` (the `site` module executes those at start-up). Well "
            "known benign files (setuptools' `distutils-precedence.pth`, editable-install "
            "finders, `_virtualenv.pth`, namespace-package `-nspkg.pth`) are recognised by name "
            "and content. A `.pth` shipped (and hash-verified) by an installed distribution is "
            "medium; one that no distribution owns is high.",
            why="`.pth` import lines run before any user code, in every Python process of the "
            "environment (training jobs, notebooks, tests) and are rarely looked at. They are a "
            "known persistence and supply-chain technique.",
            example="site-packages/zz_patch.pth:\n"
            "import os; exec(open('/tmp/.x').read())",
            use_instead="Delete the file. Put needed start-up code in your program's entry "
            "point, where it is reviewed.",
            references=(_SITE_DOCS, "https://attack.mitre.org/techniques/T1546/018/"),
        ),
        cwe=506,
    )
)

SITECUSTOMIZE = register(
    Rule(
        code="MLS506",
        name="startup-module-present",
        severity=Severity.HIGH,
        confidence=Confidence.MEDIUM,
        summary="sitecustomize or usercustomize is importable and runs at every start-up.",
        doc=RuleDoc(
            what="Looks for `sitecustomize` and `usercustomize` (as `.py`, `.pyc`, native "
            "extension or package) in every directory on the target interpreter's `sys.path`, "
            "including directories added by `.pth` path lines and `PYTHONPATH`. Python imports "
            "the first one found automatically after `site`.",
            why="These modules run in every process before user code. A dropped "
            "`sitecustomize.py` can reseed random generators, patch optimizers or exfiltrate "
            "credentials without touching the project or any installed package.",
            example="site-packages/sitecustomize.py:\n"
            "import torch; torch.manual_seed = lambda *a, **k: None",
            use_instead="Remove it; if the platform ships one (some Linux distributions do), "
            "accept it with `mlscan env --lock FILE`.",
            references=(_SITE_DOCS,),
        ),
        cwe=506,
    )
)

STARTUP_ENV = register(
    Rule(
        code="MLS507",
        name="startup-environment-variable",
        severity=Severity.MEDIUM,
        confidence=Confidence.MEDIUM,
        summary="An environment variable changes what Python or the dynamic loader loads.",
        doc=RuleDoc(
            what="Reports set environment variables that change which code the interpreter, "
            "the dynamic loader, CUDA or NCCL load. " + _startup_vars_text(),
            why="A value in a shared shell profile or job script silently substitutes "
            "libraries (`LD_PRELOAD=/tmp/libfast.so` can hook `cudaMemcpy`) or modules "
            "(`PYTHONPATH=/scratch/x` shadows `torch`) without changing a single installed file.",
            example="LD_PRELOAD=/shared/tools/libnccl_fix.so",
            use_instead="Unset the variable, or accept a value you rely on with "
            "`mlscan env --lock FILE`.",
            references=("https://docs.python.org/3/using/cmdline.html#environment-variables",
                        "https://man7.org/linux/man-pages/man8/ld.so.8.html"),
        ),
        cwe=427,
    )
)

LOCK_MISMATCH = register(
    Rule(
        code="MLS508",
        name="env-lock-mismatch",
        severity=Severity.HIGH,
        confidence=Confidence.HIGH,
        summary="A file or value accepted in the environment lock changed or disappeared.",
        doc=RuleDoc(
            what="With `mlscan env --verify-lock FILE`, compares the sha256 of every file and "
            "environment value accepted earlier with `--lock FILE` (site-wide "
            "`sitecustomize.py`, `.pth` files, patched builds) and reports changes and removals. "
            "Accepted entries that still match are not reported.",
            why="A lock turns a one-time review of start-up hooks and patched files into a "
            "check that fails as soon as any of them changes.",
            example="site-packages/sitecustomize.py: sha256 differs from the lock",
            use_instead="Review the change; if it is intended, write the lock again.",
        ),
        cwe=494,
    )
)

ENV_UNREADABLE = register(
    Rule(
        code="MLS509",
        name="env-path-unreadable",
        severity=Severity.MEDIUM,
        confidence=Confidence.HIGH,
        summary="A file or RECORD in the environment could not be read or parsed.",
        doc=RuleDoc(
            what="Reports installed files, `RECORD`s and `.pth` files that cannot be opened, "
            "are not regular files, or cannot be parsed.",
            why="What was not read cannot be called unchanged.",
            example="site-packages/torch-2.13.0.dist-info/RECORD: permission denied",
            use_instead="Run mlscan with permission to read the environment.",
        ),
        cwe=353,
    )
)

BYTECODE_DIFFERS = register(
    Rule(
        code="MLS510",
        name="bytecode-cache-differs",
        severity=Severity.HIGH,
        confidence=Confidence.HIGH,
        summary="A byte-code cache Python would run instead of its source differs from it.",
        doc=RuleDoc(
            what="With `mlscan env --bytecode`, recompiles every verified `.py` file that has a "
            "cache in `__pycache__` whose header Python would accept (source mtime and size, "
            "or source hash, match) and compares the code objects, ignoring the recorded file "
            "name. Critical inside well-known ML packages. `--lock` records the caches proven "
            "equal, so `--verify-lock FILE --bytecode` recompiles only caches or sources that "
            "changed since.",
            why="pip does not record hashes for the `.pyc` files it writes, and Python runs a "
            "cache with a valid header without reading the source: editing "
            "`torch/__pycache__/random.cpython-311.pyc` changes behaviour while `random.py` "
            "still matches its RECORD.",
            example="torch/optim/__pycache__/adamw.cpython-311.pyc: byte-code differs from the "
            "compiled source",
            use_instead="Delete the `__pycache__` folders of the environment (Python rebuilds "
            "them) and reinstall the distribution.",
            references=("https://peps.python.org/pep-3147/", "https://peps.python.org/pep-0552/"),
        ),
        cwe=494,
    )
)
