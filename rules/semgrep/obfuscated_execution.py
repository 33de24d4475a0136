# Annotated examples for obfuscated_execution.yaml. Never executed: scanned only.
# A ruleid comment marks the next line as a required hit of that rule, an ok comment a miss.
import base64
import binascii
import builtins
import code
import codecs
import importlib
import marshal
import os
import subprocess
import timeit
import types
import zlib
from base64 import b64decode as unb64

PAYLOAD = "aW1wb3J0IG9zOyBvcy5zeXN0ZW0oJ2lkJyk="


def direct_base64():
    # ruleid: exec-of-decoded-data
    exec(base64.b64decode(PAYLOAD))


def aliased_import():
    # ruleid: exec-of-decoded-data
    exec(unb64(PAYLOAD).decode())


def through_variables(blob):
    data = zlib.decompress(base64.b64decode(blob))
    source = data.decode("utf-8")
    # ruleid: exec-of-decoded-data
    exec(source, {"__name__": "__main__"})


def rot13():
    code = codecs.decode("vzcbeg bf", "rot13")
    # ruleid: exec-of-decoded-data
    eval(compile(code, "<x>", "exec"))


def marshalled(blob):
    # ruleid: exec-of-decoded-data
    exec(marshal.loads(blob))


def hex_encoded():
    # ruleid: exec-of-decoded-data
    eval(bytes.fromhex("5f5f696d706f72745f5f28276f732729").decode())


def unhexlify(blob):
    text = binascii.unhexlify(blob)
    # ruleid: exec-of-decoded-data
    builtins.exec(text)


def chr_built():
    cmd = "".join(chr(c) for c in [112, 114, 105, 110, 116])
    # ruleid: exec-of-decoded-data
    exec(cmd)


def map_chr():
    # ruleid: exec-of-decoded-data
    exec("".join(map(chr, [105, 100])))


def joined_fragments():
    src = "".join(["imp", "ort o", "s"])
    # ruleid: exec-of-decoded-data
    exec(src)


def reversed_literal():
    # ruleid: exec-of-decoded-data
    eval(")(metsys.so"[::-1])


def dunder_import_decoder(blob):
    # ruleid: exec-of-decoded-data
    exec(__import__("zlib").decompress(blob))


def reversed_join(parts):
    # ruleid: exec-of-decoded-data
    eval("".join(reversed(parts)))


def config_loader_literal():
    namespace = {}
    # ok: exec-of-decoded-data
    exec("lr = 3e-4\nbatch_size = 64", namespace)
    return namespace


def image_decoding(b64_png):
    import io

    from PIL import Image

    raw = base64.b64decode(b64_png)
    # ok: exec-of-decoded-data
    return Image.open(io.BytesIO(raw))


def compile_regex_not_code():
    import re

    # ok: exec-of-decoded-data
    return re.compile(r"\d+")


def getattr_concat(source):
    # ruleid: dynamic-builtin-lookup
    getattr(builtins, "ex" + "ec")(source)


def getattr_variable(name, source):
    # ruleid: dynamic-builtin-lookup
    fn = getattr(__builtins__, name)
    return fn(source)


def getattr_literal_exec(source):
    # ruleid: dynamic-builtin-lookup
    return getattr(builtins, "eval")(source)


def builtins_dict(name):
    # ruleid: dynamic-builtin-lookup
    return __builtins__.__dict__[name]


def dunder_import_builtins(source):
    # ruleid: dynamic-builtin-lookup
    return getattr(__import__("builtins"), "ex" + "ec")(source)


def ipython_probe():
    # ok: dynamic-builtin-lookup
    return getattr(builtins, "__IPYTHON__", False)


def profile_decorator():
    # ok: dynamic-builtin-lookup
    return getattr(builtins, "profile", lambda f: f)


def concat_import():
    # ruleid: obfuscated-import
    mod = __import__("o" + "s")
    # ruleid: obfuscated-import
    return getattr(mod, "sys" + "tem")


def decoded_import(blob):
    name = base64.b64decode(blob).decode()
    # ruleid: obfuscated-import
    return importlib.import_module(name)


def chr_import():
    # ruleid: obfuscated-import
    return __import__("".join(map(chr, [111, 115])))


def plugin_loader(cfg):
    # ok: obfuscated-import
    return importlib.import_module(cfg["model_module"])


def optimizer_by_name(torch, name):
    # ok: obfuscated-import
    return getattr(torch.optim, name)


def code_from_marshal(blob):
    # ruleid: code-object-construction
    return types.FunctionType(marshal.loads(blob), globals())


def raw_code_object(*parts):
    # ruleid: code-object-construction
    return types.CodeType(*parts)


def patched_bytecode(fn, payload):
    # ruleid: code-object-construction
    return fn.__code__.replace(co_code=payload)


def swapped_code(fn, blob):
    # ruleid: exec-of-decoded-data
    compiled = compile(zlib.decompress(blob), "<impl>", "exec")
    # ruleid: code-object-construction
    fn.__code__ = compiled.co_consts[0]


def renamed_code(fn, other):
    # ok: code-object-construction
    fn.__code__ = other.__code__
    # ok: code-object-construction
    fn.__code__ = fn.__code__.replace(co_name="wrapped")


def timed_payload(blob):
    stmt = base64.b64decode(blob).decode()
    # ruleid: exec-of-decoded-data
    return timeit.timeit(stmt, number=1)


def timed_benchmark():
    # ok: exec-of-decoded-data
    return timeit.timeit("sum(range(100))", number=10)


def console_payload(blob):
    # ruleid: exec-of-decoded-data
    code.InteractiveInterpreter().runsource(base64.urlsafe_b64decode(blob[::-1]).decode())


def copy_function(fn):
    # ok: code-object-construction
    return types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__)


def reap_workers(cmd_hex):
    # ruleid: exec-of-decoded-data
    subprocess.run(bytes.fromhex(cmd_hex).decode(), shell=True, check=False)


def hidden_module_shell(blob):
    # ruleid: obfuscated-import
    runner = __import__(codecs.decode("fhocebprff", "rot13"))
    # ruleid: exec-of-decoded-data
    runner.Popen(base64.b64decode(blob).decode(), shell=True)


def system_of_chars(codes):
    # ruleid: exec-of-decoded-data
    os.system("".join(map(chr, codes)))


def spelled_command(host):
    # ok: exec-of-decoded-data
    subprocess.run(["rsync", "-a", f"{host}:/data", "/data"], check=True)


def plain_shell(path):
    # ok: exec-of-decoded-data
    os.system(f"nvidia-smi > {path}")


def probe_by_getattr(hex_cmd):
    tool = __import__("subprocess")
    cmd = bytes.fromhex(hex_cmd).decode()
    # ruleid: exec-of-decoded-data
    getattr(tool, "Popen")(cmd, shell=True)
