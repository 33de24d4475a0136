"""Keras (with and without h5py), HF repo resolution, ONNX/TF/safetensors details and the
per-folder summary."""

from __future__ import annotations

import builtins
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fixtures import format_builders as fb  # noqa: E402
from mlscan.analyzers.base import Source, scan_source  # noqa: E402
from mlscan.analyzers.folder_summary import summarize_folder  # noqa: E402
from mlscan.analyzers.keras_config import bytecode_names  # noqa: E402
from mlscan.context import Budget, Settings  # noqa: E402
from mlscan.engine import ScanOptions, scan  # noqa: E402
from mlscan.kinds import Kind, sniff  # noqa: E402
from mlscan.model import Finding  # noqa: E402

EVIL = fb.lambda_code_b64("lambda x: __import__('os').system('true') or x")


def _scan_bytes(data: bytes, name: str, kind: Kind | None = None,
                fs_path: Path | None = None) -> list[Finding]:
    src = Source(stream=io.BytesIO(data), path=name, name=name, size=len(data), fs_path=fs_path)
    return list(scan_source(src, Budget(Settings()), kind=kind))


def _legacy_h5(layers: list[dict[str, Any]]) -> bytes:
    cfg = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    return fb.h5({"model_config": json.dumps(cfg).encode(), "keras_version": "2.15.0"})


LAMBDA = {"class_name": "Lambda", "config": {"name": "l", "function": [EVIL, None, None],
                                             "function_type": "lambda", "module": "__main__"}}


def test_bytecode_names_are_read_without_unmarshalling() -> None:
    names = bytecode_names(EVIL)
    assert {"__import__", "system"} <= names
    assert bytecode_names("not base64 at all!") == set()


@pytest.mark.parametrize("with_h5py", [True, False])
def test_h5_lambda_found_with_and_without_h5py(with_h5py: bool,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    data = _legacy_h5([LAMBDA])
    if not with_h5py:
        real = builtins.__import__

        def no_h5py(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "h5py":
                raise ImportError("hidden")
            return real(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_h5py)
    found = _scan_bytes(data, "m.h5")
    assert [(f.rule_id, f.severity.value) for f in found] == [("MLS230", "critical")]


def test_corrupt_h5_is_reported_and_still_searched() -> None:
    data = bytearray(_legacy_h5([LAMBDA]))
    data[8:64] = b"\xff" * 56  # break the superblock, keep the attribute bytes
    rules = {f.rule_id for f in _scan_bytes(bytes(data), "m.h5", Kind.HDF5)}
    assert rules == {"MLS901", "MLS230"}


def test_benign_h5_and_keras_configs_are_quiet() -> None:
    dense = {"class_name": "Dense", "config": {"name": "d", "units": 2}}
    assert _scan_bytes(_legacy_h5([dense]), "m.h5") == []
    custom = {"module": "my_project.layers", "class_name": "Gate", "config": {"name": "g"},
              "registered_name": "my_project>Gate"}
    found = _scan_bytes(json.dumps(fb.sequential([custom])).encode(), "config.json")
    assert [(f.rule_id, f.severity.value) for f in found] == [("MLS231", "medium")]


def test_keras_zip_is_detected_by_content_under_any_name() -> None:
    data = fb.keras_zip(fb.sequential([LAMBDA]), fb.h5({}))
    found = _scan_bytes(data, "innocent.bin")
    assert any(f.rule_id == "MLS230" and f.member == "config.json" for f in found), found


def test_auto_map_resolution_on_disk(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "modeling_ok.py").write_text("class A: pass\n")
    outside = tmp_path / "outside.py"
    outside.write_text("class B: pass\n")
    os.symlink(outside, repo / "modeling_link.py")
    cfg = {"auto_map": {"AutoModel": "modeling_ok.A", "AutoConfig": "modeling_link.B",
                        "AutoTokenizer": ["tokenization_gone.T", None],
                        "AutoProcessor": "../../evil.C"}}
    (repo / "config.json").write_text(json.dumps(cfg))
    found = _scan_bytes((repo / "config.json").read_bytes(), "config.json",
                        fs_path=repo / "config.json")
    by_rule = sorted((f.rule_id, f.evidence) for f in found)
    assert ("MLS220", "modeling_ok.py") in by_rule
    assert ("MLS222", "modeling_link.py") in by_rule
    assert ("MLS222", "tokenization_gone.py") in by_rule
    assert any(r == "MLS222" and ".." in e for r, e in by_rule)


def test_auto_map_inside_an_archive_is_reported_without_resolution() -> None:
    cfg = json.dumps({"auto_map": {"AutoModel": "modeling_x.M"}}).encode()
    found = _scan_bytes(cfg, "config.json")
    assert [f.rule_id for f in found] == ["MLS220"]


def test_formats_are_sniffed_from_content() -> None:
    onnx = fb.onnx_model(fb.onnx_graph([], []))
    saved = fb.tf_saved_model([], {})
    assert sniff(onnx[:512], "weights.dat") is Kind.ONNX
    assert sniff(saved[:512], "blob") is Kind.TF_SAVEDMODEL
    assert sniff(fb.gguf({"a": "b"})[:512], "x.bin") is Kind.GGUF
    st = fb.safetensors_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                            b"\0" * 4)
    assert sniff(st[:512], "x.bin") is Kind.SAFETENSORS


def test_onnx_benign_with_local_external_data(tmp_path: Path) -> None:
    model = fb.onnx_model(fb.onnx_graph([fb.onnx_node("Add", ["a", "b"], ["c"])],
                                        [fb.onnx_tensor("b", (2,), "sub/weights.bin")]),
                          ("", "com.microsoft"))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "weights.bin").write_bytes(b"\0" * 8)
    path = tmp_path / "model.onnx"
    path.write_bytes(model)
    with open(path, "rb") as fh:
        src = Source(stream=fh, path="model.onnx", name="model.onnx", size=len(model),
                     fs_path=path)
        assert list(scan_source(src, Budget(Settings()), kind=Kind.ONNX)) == []


def test_tf_print_to_file_and_benign_print() -> None:
    evil = fb.tf_saved_model([fb.tf_node("p", "PrintV2", ("x",),
                                         {"output_stream": "file:///root/.bashrc"})], {})
    ok = fb.tf_saved_model([fb.tf_node("p", "PrintV2", ("x",), {"output_stream": "stderr"})],
                           {})
    assert [f.severity.value for f in _scan_bytes(evil, "saved_model.pb")] == ["high"]
    assert _scan_bytes(ok, "saved_model.pb") == []


def test_safetensors_metadata_template_and_code() -> None:
    header = {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
              "__metadata__": {"t": "{{ cycler.__init__.__globals__.os }}",
                               "c": "import os; os.system('x')"}}
    found = _scan_bytes(fb.safetensors_raw(header, b"\0" * 4), "m.safetensors")
    assert sorted((f.rule_id, f.severity.value) for f in found) == [
        ("MLS251", "critical"), ("MLS251", "medium")]


def test_folder_summary(tmp_path: Path) -> None:
    st = fb.safetensors_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                            b"\0" * 4)
    safe = tmp_path / "safe"
    safe.mkdir()
    (safe / "model.safetensors").write_bytes(st)
    (safe / "config.json").write_text('{"model_type": "bert"}')
    lines = summarize_folder(safe)
    assert any("safetensors: model.safetensors" in line for line in lines)
    assert lines[-1].strip().startswith("verdict: safe: data-only formats")

    risky = tmp_path / "risky"
    risky.mkdir()
    (risky / "model.keras").write_bytes(fb.keras_zip(fb.sequential([LAMBDA]), fb.h5({})))
    (risky / "config.json").write_text('{"auto_map": {"AutoModel": "modeling.M"}}')
    report = scan(ScanOptions(paths=(tmp_path,), jobs=1, base=tmp_path))
    lines = summarize_folder(risky, report.findings, display="risky")
    text = "\n".join(lines)
    assert "keras: model.keras" in text and "remote-code: config.json" in text
    assert "NOT SAFE" in lines[-1] and "MLS230" in lines[-1]
    assert "NOT SAFE" not in summarize_folder(safe, report.findings, display="safe")[-1]


def test_scan_summary_lists_each_model_folder(tmp_path: Path) -> None:
    from mlscan.analyzers.folder_summary import summarize_scan

    st = fb.safetensors_raw({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},
                            b"\0" * 4)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "model.safetensors").write_bytes(st)
    (tmp_path / "a" / "b").mkdir()
    (tmp_path / "a" / "b" / "evil.keras").write_bytes(
        fb.keras_zip(fb.sequential([LAMBDA]), fb.h5({})))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.json").write_text("{}")
    report = scan(ScanOptions(paths=(tmp_path,), jobs=1, base=tmp_path))
    lines = summarize_scan([tmp_path], report.findings, base=tmp_path)
    heads = [line for line in lines if line.startswith("model folder")]
    assert heads == ["model folder a:", "model folder a/b:"]
    verdicts = [line for line in lines if "verdict" in line]
    assert "safe: data-only" in verdicts[0] and "NOT SAFE" in verdicts[1]


def test_safetensors_whose_length_starts_like_a_pickle() -> None:
    # Header length 0x010280 begins b"\x80\x02\x01": content sniffing must still say
    # safetensors, and the pickle analysis must still run (polyglots).
    header = {"a": {"dtype": "U8", "shape": [8], "data_offsets": [0, 8]}}
    raw = json.dumps(header).encode()
    raw += b" " * (0x010280 - len(raw))
    data = (0x010280).to_bytes(8, "little") + raw + b"\0" * 8
    assert sniff(data[:512], "model.safetensors") is Kind.SAFETENSORS
    assert _scan_bytes(data, "model.safetensors") == []
