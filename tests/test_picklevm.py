"""The symbolic pickle VM and its judge, on streams built opcode by opcode.

Nothing here is ever unpickled: streams are bytes literals or `pickle.dumps` output.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
from pathlib import Path

import pytest

from mlscan.analyzers.base import Source, scan_source
from mlscan.context import Budget, Limits, Settings
from mlscan.model import Finding, Severity


def scan_bytes(data: bytes, name: str = "x.pkl", settings: Settings | None = None) -> list[Finding]:
    src = Source(stream=io.BytesIO(data), path=name, name=name, size=len(data))
    return list(scan_source(src, Budget(settings or Settings())))


def codes(findings: list[Finding]) -> set[str]:
    return {f.rule_id for f in findings}


def evidence(findings: list[Finding], code: str) -> set[str]:
    return {f.evidence for f in findings if f.rule_id == code}


def u(text: str) -> bytes:
    """SHORT_BINUNICODE + MEMOIZE."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw + b"\x94"


def sg(module: str, name: str) -> bytes:
    """STACK_GLOBAL from two memoized strings (protocol 4 style)."""
    return u(module) + u(name) + b"\x93\x94"


P4 = b"\x80\x04"
PAYLOAD = b"\x80\x02cposix\nsystem\nX\x02\x00\x00\x00id\x85R."


class Benign:
    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize("protocol", range(6))
def test_plain_data_is_quiet_in_every_protocol(protocol: int) -> None:
    import collections
    import datetime
    import decimal
    import functools
    import uuid

    data = {"od": collections.OrderedDict(a=1), "when": datetime.datetime(2020, 1, 1),
            "dec": decimal.Decimal("1.5"), "id": uuid.UUID(int=5), "set": {1, 2},
            "p": functools.partial(int, base=2), "b": b"\x00" * 300, "f": 1.5, "big": 2**80}
    assert scan_bytes(pickle.dumps(data, protocol=protocol)) == []


@pytest.mark.parametrize("protocol", range(6))
def test_payload_found_in_every_protocol(protocol: int) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("id",))

    found = scan_bytes(pickle.dumps(Evil(), protocol=protocol))
    assert evidence(found, "MLS201") == {"posix.system"}


def test_stack_global_from_memo_reads_is_resolved() -> None:
    # names memoized, then fetched back with BINGET before STACK_GLOBAL
    data = P4 + u("posix") + u("system") + b"h\x00h\x01\x93" + u("id") + b"\x85R."
    assert evidence(scan_bytes(data), "MLS201") == {"posix.system"}


def test_stack_global_with_computed_name_is_a_gadget() -> None:
    data = P4 + u("posix") + b"N\x93N\x85R."
    assert "MLS205" in codes(scan_bytes(data))


def test_getattr_on_import_module_resolves_the_final_callable() -> None:
    data = (P4 + sg("builtins", "getattr") + sg("importlib", "import_module") + u("os")
            + b"\x85R" + u("system") + b"\x86R" + u("id") + b"\x85R.")
    found = scan_bytes(data)
    assert "os.system" in evidence(found, "MLS201")
    (sys_finding,) = [f for f in found if f.evidence == "os.system"]
    assert "called via getattr" in sys_finding.message


def test_getattr_to_a_nested_allowlisted_class_is_quiet() -> None:
    # proto < 4 pickles nested classes as getattr(Outer, "Inner")
    data = b"\x80\x02cbuiltins\ngetattr\ncdatetime\ndatetime\nX\x03\x00\x00\x00min\x86R."
    assert "MLS201" not in codes(scan_bytes(data))
    assert "MLS205" not in codes(scan_bytes(data))


def test_partial_is_judged_by_the_function_it_wraps() -> None:
    quiet = P4 + sg("functools", "partial") + sg("builtins", "int") + b"\x85R."
    loud = P4 + sg("functools", "partial") + sg("builtins", "eval") + b"\x85R" + u("1") + b"\x85R."
    assert scan_bytes(quiet) == []
    found = scan_bytes(loud)
    assert evidence(found, "MLS201") == {"builtins.eval"}
    assert "via functools.partial" in next(f.message for f in found if f.rule_id == "MLS201")


def test_partial_function_restored_through_build_state_is_judged() -> None:
    # partial(int) then BUILD with state (eval, (), {}, None): __setstate__ swaps the function
    data = (P4 + sg("functools", "partial") + sg("builtins", "int") + b"\x85R"
            + b"(" + sg("builtins", "eval") + b")}Ntb.")
    assert "builtins.eval" in evidence(scan_bytes(data), "MLS201")


def test_attrgetter_on_an_unresolvable_object_is_a_gadget_call() -> None:
    data = (P4 + sg("operator", "attrgetter") + u("system") + b"\x85R"
            + sg("mylib", "factory") + b")R\x85R.")
    assert "MLS205" in codes(scan_bytes(data))


def test_methodcaller_on_a_global_resolves_to_a_call() -> None:
    data = (P4 + sg("operator", "methodcaller") + u("system") + u("id") + b"\x86R"
            + sg("os", "path") + b"\x85R.")
    found = scan_bytes(data)
    assert "os.path.system" in evidence(found, "MLS201")


def test_calling_the_result_of_a_call_is_a_gadget() -> None:
    data = P4 + sg("collections", "OrderedDict") + b")R)R."
    assert "MLS205" in codes(scan_bytes(data))


def test_unknown_globals_are_graded_by_use() -> None:
    called = b"\x80\x02cmylib.hooks\nrun\n)R0N."  # result POPped: still seen
    built = b"\x80\x02c__main__\nNet\n)\x81}X\x01\x00\x00\x00aK\x01sb."
    stored = b"\x80\x02]cmylib\nThing\na."
    assert codes(scan_bytes(called)) == {"MLS202"}
    found = scan_bytes(built)
    assert codes(found) == {"MLS204"} and found[0].severity is Severity.LOW
    assert codes(scan_bytes(stored)) == {"MLS203"}


def test_inst_and_obj_calls_are_seen() -> None:
    inst = b"(S'id'\nios\nsystem\n."
    obj = b"\x80\x02(cos\nsystem\nX\x02\x00\x00\x00ido."
    assert evidence(scan_bytes(inst), "MLS201") == {"os.system"}
    assert evidence(scan_bytes(obj), "MLS201") == {"os.system"}


def test_build_on_a_global_is_tampering() -> None:
    data = b"\x80\x02ctorch.nn\nModule\nN}X\x07\x00\x00\x00forwardNs\x86b."
    found = scan_bytes(data)
    assert "MLS206" in codes(found)


def test_in_place_tensor_op_is_tampering_without_any_os_import() -> None:
    data = P4 + sg("torch", "Tensor.mul_") + b"N\x85R."
    assert codes(scan_bytes(data)) == {"MLS206"}


def test_dunder_reach_through_is_dangerous() -> None:
    data = b"\x80\x02cnumpy\n__builtins__.eval\nX\x03\x00\x00\x001+1\x85R."
    assert evidence(scan_bytes(data), "MLS201") == {"numpy.__builtins__.eval"}


def test_python2_names_are_normalised() -> None:
    data = b"c__builtin__\neval\n(S'1'\ntR."
    assert evidence(scan_bytes(data), "MLS201") == {"builtins.eval"}


def test_truncated_stream_reports_payload_and_break() -> None:
    found = scan_bytes(PAYLOAD[:-1])  # STOP removed: loaders run the call, then fail
    assert "MLS201" in codes(found) and "MLS901" in codes(found)
    brk = next(f for f in found if f.rule_id == "MLS901")
    assert "before the break" in brk.message


def test_payload_in_a_second_stacked_pickle_is_found() -> None:
    data = pickle.dumps({"ok": 1}, protocol=2) + PAYLOAD
    assert evidence(scan_bytes(data), "MLS201") == {"posix.system"}


def test_trailing_raw_bytes_after_the_last_pickle_are_not_an_error() -> None:
    data = pickle.dumps([1, 2], protocol=2) + struct.pack("<Q", 3) + os.urandom(64)
    assert scan_bytes(data) == []


def test_huge_bytes_value_is_skipped_not_read() -> None:
    blob = b"\x00" * (8 * 1024 * 1024)
    data = (P4 + b"]\x94\x8e" + struct.pack("<Q", len(blob)) + blob + b"a"
            + b"\x8c\x05posix\x8c\x06system\x93\x8c\x02id\x85Ra.")
    assert evidence(scan_bytes(data), "MLS201") == {"posix.system"}


def test_length_field_that_lies_is_malformed_not_a_crash() -> None:
    data = P4 + b"\x8e" + struct.pack("<Q", 10**15) + b"abc."
    assert codes(scan_bytes(data)) == {"MLS901"}


def test_memo_flood_stops_at_the_limit() -> None:
    settings = Settings(limits=Limits(max_pickle_memo=1000))
    data = P4 + b"N" + b"\x94" * 5000 + b"."
    assert codes(scan_bytes(data, settings=settings)) == {"MLS902"}


def test_deep_nesting_is_bounded() -> None:
    settings = Settings(limits=Limits(max_pickle_stack=10_000))
    data = P4 + b"(" * 50_000 + b"."
    assert codes(scan_bytes(data, settings=settings)) & {"MLS901", "MLS902"}


def test_extension_registry_opcodes_cannot_be_resolved() -> None:
    data = b"\x80\x02\x82\x05)R."
    assert "MLS205" in codes(scan_bytes(data))


def test_embedded_pickle_in_bytes_is_scanned_with_member_path() -> None:
    data = P4 + sg("_pickle", "loads") + b"C" + bytes([len(PAYLOAD)]) + PAYLOAD + b"\x85R."
    found = scan_bytes(data)
    nested = [f for f in found if f.member and f.member.startswith("<bytes@")]
    assert {f.evidence for f in nested} == {"posix.system"}
    assert "MLS207" in codes(found)
    assert "pickle.loads" in evidence(found, "MLS201")


def test_random_bytes_inside_a_pickle_are_not_reported() -> None:
    blobs = [os.urandom(4096) for _ in range(50)]
    assert scan_bytes(pickle.dumps(blobs, protocol=4)) == []


def test_extra_allowlist_silences_a_project_constructor() -> None:
    data = b"\x80\x02cmylib.types\nPoint\nK\x01K\x02\x86R."
    assert codes(scan_bytes(data)) == {"MLS202"}
    settings = Settings(extra_pickle_allowlist=("mylib.types.Point",))
    assert scan_bytes(data, settings=settings) == []


def test_allowlist_carve_out_does_not_open_the_module() -> None:
    ok = b"\x80\x02cpathlib\nPosixPath\nX\x04\x00\x00\x00/tmp\x85R."
    bad = b"\x80\x02cpathlib\nPath.write_text\nX\x04\x00\x00\x00/tmp\x85R."
    assert scan_bytes(ok) == []
    assert "MLS201" in codes(scan_bytes(bad))


def test_pickle_named_like_safetensors_is_a_disguise() -> None:
    found = scan_bytes(pickle.dumps([1], protocol=2), name="model.safetensors")
    assert "MLS211" in codes(found)


def test_joblib_inline_array_bytes_are_skipped_and_payload_after_them_found(
        tmp_path: Path) -> None:
    import joblib
    import numpy as np

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, ("id",))

    benign = tmp_path / "benign.joblib"
    evil = tmp_path / "evil.joblib"
    # arrays whose raw bytes look like opcodes: a scanner that does not skip them derails
    joblib.dump({"a": np.frombuffer(b"cposix\nsystem\n" * 100, dtype=np.uint8),
                 "b": np.arange(1000.0)}, benign)
    joblib.dump({"a": np.arange(1000.0), "z": Evil()}, evil)
    assert scan_bytes(benign.read_bytes(), "benign.joblib") == []
    assert evidence(scan_bytes(evil.read_bytes(), "evil.joblib"), "MLS201") == {"posix.system"}


def test_pickled_tensor_storages_are_judged_by_their_nested_bytes() -> None:
    import torch

    plain = pickle.dumps({"t": torch.ones(3), "p": torch.nn.Parameter(torch.ones(2))},
                         protocol=2)
    assert scan_bytes(plain) == []
    text = PAYLOAD.decode("latin1")
    evil = (b"\x80\x02ctorch.storage\n_load_from_bytes\nc_codecs\nencode\nX"
            + struct.pack("<I", len(text.encode())) + text.encode()
            + b"X\x06\x00\x00\x00latin1\x86R\x85R.")
    found = scan_bytes(evil)
    assert {f.evidence for f in found if f.member} == {"posix.system"}
