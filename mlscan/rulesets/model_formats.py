"""MLS230-MLS252: Keras, TensorFlow, ONNX and safetensors artifacts."""

from __future__ import annotations

from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

_KERAS_SAFE = "https://keras.io/api/models/model_saving_apis/model_saving_and_loading/"
_ONNX_EXT = "https://onnx.ai/onnx/repo-docs/ExternalData.html"
_ST = "https://github.com/huggingface/safetensors#format"

KERAS_LAMBDA = register(Rule(
    code="MLS230",
    name="keras-lambda-layer",
    severity=Severity.HIGH,
    confidence=Confidence.HIGH,
    summary="Keras model contains a Lambda layer with serialized Python bytecode.",
    cwe=94,
    doc=RuleDoc(
        what="Finds Lambda layers in `.keras` config.json, HDF5 `model_config` attributes and "
        "SavedModel Keras metadata. The base64 marshalled bytecode is decoded (never "
        "unmarshalled or run) and the names it uses are listed; names such as os, system, "
        "exec or __import__ raise the finding to critical.",
        why="A Lambda layer's function is rebuilt from bytecode and runs when the model is "
        "loaded or called. Legacy H5 loading ignored `safe_mode`; it was the second most "
        "common payload on public model hubs after pickles.",
        example='{"class_name": "Lambda", "config": {"function": ["4wEAAAA...", null, null]}}',
        use_instead="Replace Lambda layers with registered custom layers defined in code; "
        "load with `keras.saving.load_model(path, safe_mode=True)`.",
        references=(_KERAS_SAFE,),
    ),
))

KERAS_EXTERNAL_MODULE = register(Rule(
    code="MLS231",
    name="keras-external-module",
    severity=Severity.MEDIUM,
    confidence=Confidence.MEDIUM,
    summary="Keras config references a module outside Keras (`module`, `fn_module`, "
    "`registered_name`): it is imported on load.",
    cwe=470,
    doc=RuleDoc(
        what="Checks every `module`, `fn_module` and `registered_name` in a Keras config. "
        "Modules of Keras itself are quiet; dangerous ones (os, subprocess, builtins, "
        "importlib, runpy...) are critical; other packages are reported at medium.",
        why="Keras resolves these references by importing the module and fetching the "
        "attribute, which bypassed `safe_mode` (e.g. a function config naming `os.system`).",
        example='{"module": "os", "class_name": "function", "config": "system"}',
        use_instead="Only reference Keras objects or registered custom objects of your own "
        "package.",
        references=(_KERAS_SAFE,),
    ),
))

KERAS_GADGET = register(Rule(
    code="MLS232",
    name="keras-unsafe-gadget",
    severity=Severity.CRITICAL,
    confidence=Confidence.HIGH,
    summary="Keras config uses a known safe_mode bypass (enable_unsafe_deserialization, "
    "get_file, TorchModuleWrapper, TFSMLayer, nested load_model, vocabulary files).",
    cwe=502,
    doc=RuleDoc(
        what="Flags configs that call `keras.config.enable_unsafe_deserialization`, "
        "`keras.utils.get_file`, a nested `load_model`, contain a `TorchModuleWrapper` "
        "(whose config is a torch pickle loaded with `torch.load`; the pickle is scanned "
        "too) or a `TFSMLayer` (loads an external SavedModel), and lookup layers whose "
        "`vocabulary` is a file path read at load time (high).",
        why="Each of these was a public bypass of Keras `safe_mode`: they turn a model config "
        "into file downloads/writes or pickle execution.",
        example='{"class_name": "TorchModuleWrapper", "config": {"module": "UEsDBBQ..."}}',
        use_instead="Do not load the model; ask for a plain Keras or safetensors export.",
        references=(_KERAS_SAFE,),
    ),
))

TF_DANGEROUS_OP = register(Rule(
    code="MLS235",
    name="tf-dangerous-op",
    severity=Severity.CRITICAL,
    confidence=Confidence.HIGH,
    summary="TensorFlow graph contains ops that run Python or read/write files.",
    cwe=94,
    doc=RuleDoc(
        what="Parses `saved_model.pb`, frozen GraphDefs and `keras_metadata.pb` with a "
        "protobuf wire reader (TensorFlow is never imported) and flags `PyFunc`, "
        "`PyFuncStateless`, `EagerPyFunc` (critical), `WriteFile` (critical), `ReadFile`, "
        "`MatchingFiles`, `PrintV2` to a file and debug ops with URLs (high), in the graph "
        "and in every function of its library.",
        why="Serving or calling the model runs these ops: they read secrets, overwrite files "
        "or call back into Python.",
        example="node { op: 'WriteFile' input: 'filename' input: 'contents' }",
        use_instead="Do not serve the model; re-export it from reviewed code.",
        references=("https://www.tensorflow.org/guide/saved_model",),
    ),
))

ONNX_EXTERNAL_DATA = register(Rule(
    code="MLS240",
    name="onnx-external-data-escape",
    severity=Severity.CRITICAL,
    confidence=Confidence.HIGH,
    summary="ONNX tensor external_data location escapes the model folder (.., absolute path, "
    "symlink).",
    cwe=22,
    doc=RuleDoc(
        what="Reads every TensorProto in the graph, its subgraphs and functions and checks "
        "`external_data` `location` entries for absolute paths, `..` components and "
        "symlinks whose target lies outside the model folder.",
        why="Loading reads the named file into a tensor (exfiltration of secrets through model "
        "outputs) and saving writes to it (overwriting arbitrary files).",
        example='external_data { key: "location" value: "../../../home/u/.ssh/id_rsa" }',
        use_instead="External data files must be plain names inside the model folder.",
        references=(_ONNX_EXT,),
    ),
))

ONNX_CUSTOM_DOMAIN = register(Rule(
    code="MLS241",
    name="onnx-custom-op-domain",
    severity=Severity.LOW,
    confidence=Confidence.MEDIUM,
    summary="ONNX model uses operators from a custom domain (needs a native extension library).",
    doc=RuleDoc(
        what="Reports operator domains other than the standard ones (`ai.onnx`, `ai.onnx.ml`, "
        "`ai.onnx.training`, `ai.onnx.preview.training`, `com.microsoft`).",
        why="Custom operators are implemented in shared libraries the runtime must load; the "
        "model alone does not say what that code does.",
        example="node { op_type: 'Exec' domain: 'com.evil' }",
        use_instead="Use standard operators, or review the extension library you register.",
        references=("https://onnxruntime.ai/docs/reference/operators/add-custom-op.html",),
    ),
))

SAFETENSORS_INVALID = register(Rule(
    code="MLS250",
    name="safetensors-invalid-header",
    severity=Severity.MEDIUM,
    confidence=Confidence.HIGH,
    summary="safetensors header is inconsistent (dtype/shape/offsets, overlaps, out-of-file "
    "ranges, duplicate keys).",
    cwe=20,
    doc=RuleDoc(
        what="Validates the header: length bounds, JSON object, known dtypes, shape x dtype "
        "size equals the byte range, ranges inside the data area, no overlaps or gaps, no "
        "duplicate keys, string-only metadata. Tensor bytes are never read.",
        why="The reference loader rejects such files, but hand-written and streaming readers "
        "do not; inconsistent headers are how parser differentials and smuggled payloads "
        "begin.",
        example='{"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}  # needs 16 bytes',
        use_instead="Re-export with the safetensors library.",
        references=(_ST,),
    ),
))

SAFETENSORS_PAYLOAD = register(Rule(
    code="MLS251",
    name="safetensors-hidden-payload",
    severity=Severity.HIGH,
    confidence=Confidence.MEDIUM,
    summary="safetensors file carries a pickle/archive after its tensors or in its metadata.",
    cwe=434,
    doc=RuleDoc(
        what="Looks at bytes after the last tensor and at `__metadata__` values for pickles, "
        "zip archives, base64-encoded pickles, template injection and Python code.",
        why="A polyglot file passes as safetensors for scanners while another loader (or a "
        "helper that reads the metadata) runs the hidden payload.",
        example='{"__metadata__": {"config": "gASVKAAAAAAAAACMBXBvc2l4..."}}',
        use_instead="Re-export with the safetensors library; do not load the extra data.",
        references=(_ST,),
    ),
))
