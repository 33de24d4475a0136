"""Hostile input for the format analyzers: truncations, bit flips, lying lengths and
oversized artifacts become MLS9xx findings (never a crash, a hang or a silent pass)."""

from __future__ import annotations

import io
import random
import struct
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fixtures import format_builders as fb  # noqa: E402
from fixtures.chat_templates import BENIGN  # noqa: E402
from fixtures.common import Marker  # noqa: E402
from fixtures.generate_formats import format_specs  # noqa: E402
from mlscan.analyzers.base import Source, scan_source  # noqa: E402
from mlscan.containers.protobuf import enc_field, fields  # noqa: E402
from mlscan.context import Budget, Limits, Settings  # noqa: E402
from mlscan.errors import MalformedError  # noqa: E402
from mlscan.kinds import Kind  # noqa: E402
from mlscan.model import Finding  # noqa: E402

SPECS = [s for s in format_specs(Marker(Path("/nonexistent/marker")))
         if not s.name.endswith(".py")]
KINDS = [Kind.SAFETENSORS, Kind.GGUF, Kind.ONNX, Kind.TF_SAVEDMODEL, Kind.HDF5, Kind.JSON,
         Kind.YAML, Kind.JINJA]


def _scan(data: bytes, name: str, kind: Kind | None = None,
          limits: Limits | None = None) -> list[Finding]:
    src = Source(stream=io.BytesIO(data), path=name, name=name.rsplit("/", 1)[-1],
                 size=len(data))
    return list(scan_source(src, Budget(Settings(limits=limits or Limits())), kind=kind))


def _mutations(data: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    cuts = sorted({1, 4, 8, 12, 16, 24, len(data) // 3, len(data) // 2, len(data) - 1})
    out = [data[:c] for c in cuts if 0 < c < len(data)]
    for _ in range(12):
        b = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_mutated_samples_never_crash_or_hang(spec: object) -> None:
    name, data = spec.name, spec.data  # type: ignore[attr-defined]
    start = time.perf_counter()
    for i, mutated in enumerate(_mutations(data, seed=len(name))):
        for kind in (None, *KINDS) if i < 3 else (None,):
            findings = _scan(mutated, name, kind)
            crashes = [f for f in findings if f.rule_id == "MLS903"]
            assert not crashes, f"{name} mutation {i} as {kind}: {crashes[0].message}"
    assert time.perf_counter() - start < 60


def test_gguf_lying_lengths_are_reported_not_allocated() -> None:
    meta = {"general.name": "x", "tokenizer.chat_template": BENIGN["chatml"]}
    lie = fb.gguf(meta, string_len_lie=1 << 62)
    assert {f.rule_id for f in _scan(lie, "a.gguf")} == {"MLS901"}
    many = fb.gguf(meta, kv_count=50_000)
    assert {f.rule_id for f in _scan(many, "b.gguf")} == {"MLS901"}
    array_lie = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k" \
        + struct.pack("<IIQ", 9, 8, 1 << 60)
    assert {f.rule_id for f in _scan(array_lie, "c.gguf")} == {"MLS901"}
    assert {f.rule_id for f in _scan(b"GGUF" + struct.pack("<I", 99), "d.gguf")} == {"MLS901"}


def test_gguf_big_endian_and_v1_headers_parse() -> None:
    v1 = b"GGUF" + struct.pack("<III", 1, 0, 1) + struct.pack("<I", 4) + b"name" \
        + struct.pack("<II", 8, 3) + b"abc"
    assert _scan(v1, "v1.gguf") == []


def test_oversized_text_configs_are_limit_findings() -> None:
    limits = Limits(max_text_bytes=1024)
    big = b'{"chat_template": "' + b"a" * 4096 + b'"}'
    assert [f.rule_id for f in _scan(big, "tokenizer_config.json", limits=limits)] == ["MLS902"]
    assert [f.rule_id for f in _scan(b"x: 1\n" * 1000, "c.yaml", Kind.YAML, limits)] \
        == ["MLS902"]


def test_safetensors_header_limits() -> None:
    huge = struct.pack("<Q", 150_000_000) + b"{" + b" " * 100
    assert [f.rule_id for f in _scan(huge, "m.safetensors", Kind.SAFETENSORS)] == ["MLS902"]
    not_json = struct.pack("<Q", 4) + b"{abc"
    assert [f.rule_id for f in _scan(not_json, "m.safetensors", Kind.SAFETENSORS)] \
        == ["MLS901"]
    dup = struct.pack("<Q", 2) + b"{}"
    assert _scan(dup, "empty.safetensors", Kind.SAFETENSORS) == []


def test_invalid_known_json_config_is_malformed() -> None:
    assert [f.rule_id for f in _scan(b'{"auto_map": ', "config.json")] == ["MLS901"]
    # Unknown JSON that mentions nothing we check is not parsed at all.
    assert _scan(b"{ not json // jsonc comment }", "tsconfig.json") == []


def test_deeply_nested_json_is_a_limit_finding() -> None:
    deep = b'{"chat_template": "x", "a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert [f.rule_id for f in _scan(deep, "tokenizer_config.json")] == ["MLS902"]


def test_yaml_alias_bomb_is_cheap() -> None:
    lines = ["a0: &a0 {_target_: nemo.X}"]
    for i in range(1, 25):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 9)}]")
    start = time.perf_counter()
    assert _scan("\n".join(lines).encode(), "bomb.yaml", Kind.YAML) == []
    assert time.perf_counter() - start < 20  # generous: shared CI cores; a blow-up is minutes


def test_protobuf_reader_rejects_lies() -> None:
    msg = enc_field(1, 5) + enc_field(2, b"abc")
    assert [(f.number, f.wire) for f in fields(msg)] == [(1, 0), (2, 2)]
    with pytest.raises(MalformedError):
        list(fields(msg[:-1]))
    with pytest.raises(MalformedError):
        list(fields(b"\x12\xff\xff\xff\xff\x0f"))  # length far past the end
    with pytest.raises(MalformedError):
        list(fields(b"\x0f"))  # wire type 7
    with pytest.raises(MalformedError):
        list(fields(b"\x08" + b"\xff" * 11))  # varint too long
    group = b"\x0b" + enc_field(1, 1) + b"\x0c" + enc_field(2, 7)  # group 1 then field 2
    assert [f.number for f in fields(group)] == [2]


def test_gguf_token_arrays_are_skipped_fast_and_checked() -> None:
    toks = [f"t{i}" for i in range(100_000)]
    data = fb.gguf({"tokenizer.ggml.tokens": toks, "tokenizer.chat_template": BENIGN["chatml"]})
    start = time.perf_counter()
    assert _scan(data, "big.gguf") == []
    assert time.perf_counter() - start < 20  # generous: shared CI cores; a blow-up is minutes
    lying = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"k" \
        + struct.pack("<IIQ", 9, 8, 2) + struct.pack("<Q", 1) + b"a" \
        + struct.pack("<Q", 1 << 50) + b"rest"
    assert {f.rule_id for f in _scan(lying, "lie.gguf")} == {"MLS901"}


def test_huge_chat_template_is_a_limit_finding_not_a_stall() -> None:
    template = "{{ messages[0]['content'] }}" * 100_000  # ~2.8 MB
    start = time.perf_counter()
    found = _scan(fb.gguf({"tokenizer.chat_template": template}), "t.gguf")
    assert [f.rule_id for f in found] == ["MLS902"]
    assert time.perf_counter() - start < 20  # generous: shared CI cores; a blow-up is minutes
