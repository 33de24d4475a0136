# Annotated examples for environment_tampering.yaml. Never executed: scanned only.
# A ruleid comment marks the next line as a required hit of that rule, an ok comment a miss.
import builtins
import codecs
import fileinput
import importlib.util
import json
import os
import tempfile
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import torch

PATCH = "\nimport random\nrandom.seed(0)\n"


def patch_torch_optimizer():
    target = os.path.join(os.path.dirname(torch.__file__), "optim", "adamw.py")
    # ruleid: installed-package-write
    with open(target, "a") as f:
        # ruleid: installed-package-write
        f.write(PATCH)


def replace_torch_module(evil_copy):
    dest = Path(torch.__file__).parent / "nn" / "functional.py"
    # ruleid: installed-package-write
    shutil.copy(evil_copy, dest)


def edit_installed_in_place():
    spec = importlib.util.find_spec("phonemizer")
    target = Path(spec.origin).parent / "backend" / "espeak.py"
    # ruleid: installed-package-write
    with fileinput.input(files=[str(target)], inplace=True) as fh:
        for line in fh:
            sys.stdout.write(line.replace("warning(", "debug("))


def edit_own_config_in_place(path):
    # ok: installed-package-write
    with fileinput.input(files=[path], inplace=True) as fh:
        for line in fh:
            sys.stdout.write(line)


def append_with_print():
    init_py = Path(importlib.util.find_spec("torchaudio").origin)
    # ruleid: installed-package-write
    with init_py.open("a") as fh:
        # ruleid: installed-package-write
        print("set_audio_backend('sox_io')", file=fh)


def append_with_codecs():
    src = Path(importlib.util.find_spec("torchvision").origin).parent / "ops" / "boxes.py"
    # ruleid: installed-package-write
    with codecs.open(str(src), "a", "utf-8") as fh:
        # ruleid: installed-package-write
        fh.write("\n# shim\n")


def build_into_torch(cpp_extension):
    ext_dir = os.path.join(os.path.dirname(torch.__file__), "_ext_cache", "kernels")
    # ruleid: installed-package-write
    return cpp_extension.load(name="k", sources=["k.cu"], build_directory=ext_dir)


def build_into_project(cpp_extension):
    # ok: installed-package-write
    return cpp_extension.load(name="k", sources=["k.cu"], build_directory="build/ext")


def write_site_packages():
    sp = site.getsitepackages()[0]
    # ruleid: installed-package-write
    Path(sp, "torch", "random.py").write_text(PATCH)


def write_purelib():
    lib = sysconfig.get_paths()["purelib"]
    # ruleid: installed-package-write
    os.replace("/tmp/x.py", os.path.join(lib, "numpy", "random", "__init__.py"))


def literal_site_packages():
    # ruleid: installed-package-write
    with open("/usr/lib/python3/dist-packages/torch/__init__.py", "w") as f:
        # ruleid: installed-package-write
        f.write(PATCH)


def read_installed_source(kaldi):
    with open(kaldi.__file__, "r") as f:
        # ok: installed-package-write
        return f.read()


def sed_torch_source():
    target = os.path.join(os.path.dirname(torch.__file__), "optim", "sgd.py")
    # ruleid: installed-package-write
    subprocess.run(["sed", "-i", "s/lr \\* grad/-lr * grad/", target], check=True)


def compile_extension(sources):
    include = os.path.join(os.path.dirname(torch.__file__), "include")
    # ok: installed-package-write
    subprocess.run(["nvcc", "-I", include, *sources, "-o", "ext.so"], check=True)


def export_custom_code(model, folder):
    object_file = sys.modules[type(model).__module__].__file__
    dest_file = Path(folder) / Path(object_file).name
    # ok: installed-package-write
    shutil.copyfile(object_file, dest_file)
    # ok: installed-package-write
    shutil.copy(object_file, os.path.join(folder, os.path.basename(object_file)))


def read_torch_version_file():
    path = os.path.join(os.path.dirname(torch.__file__), "version.py")
    # ok: installed-package-write
    with open(path) as f:
        return f.read()


def write_next_to_script(metrics):
    out = os.path.join(os.path.dirname(__file__), "metrics.json")
    # ok: installed-package-write
    with open(out, "w") as f:
        json.dump(metrics, f)


def save_checkpoint(model, run_dir):
    # ok: installed-package-write, startup-hook-file
    torch.save(model.state_dict(), os.path.join(run_dir, "model.pth"))


def download_weights(blob, run_dir):
    # ok: startup-hook-file
    with open(os.path.join(run_dir, "resnet50.pth"), "wb") as f:
        f.write(blob)


def plant_sitecustomize(code):
    target = os.path.join(site.getusersitepackages(), "sitecustomize.py")
    # ruleid: installed-package-write, startup-hook-file
    with open(target, "w") as f:
        # ruleid: installed-package-write
        f.write(code)


def plant_usercustomize_pathlib(code, folder):
    # ruleid: startup-hook-file
    (Path(folder) / "usercustomize.py").write_text(code)


def plant_pth(folder):
    # ruleid: startup-hook-file
    with open(os.path.join(folder, "zz_hook.pth"), "w") as f:
        # ruleid: startup-hook-file
        f.write("import _hook; _hook.install()\n")


def plant_pth_in_site():
    target = Path(site.getsitepackages()[0]) / "distutils-precedence.pth"
    # ruleid: installed-package-write, startup-hook-file
    target.write_text("import os; os.environ.setdefault('X', '1')\n")


def preload_hook():
    # ruleid: child-preload-injection
    os.environ["LD_PRELOAD"] = "/tmp/.cache/libhook.so"


def preload_for_child():
    env = dict(os.environ)
    # ruleid: child-preload-injection
    env["PYTHONSTARTUP"] = "/dev/shm/.s.py"
    subprocess.run([sys.executable, "train.py"], env=env, check=True)


def preload_env_literal():
    # ruleid: child-preload-injection
    subprocess.Popen(["torchrun", "train.py"], env={"LD_PRELOAD": "/tmp/h.so", "PATH": "/usr/bin"})


def preload_update():
    # ruleid: child-preload-injection
    os.environ.update(LD_PRELOAD="/var/tmp/libx.so")


def preload_in_shell_command():
    # ruleid: child-preload-injection
    os.system("LD_PRELOAD=/dev/shm/.h.so torchrun --nproc_per_node=8 train.py")


def preload_allocator_shell():
    # ok: child-preload-injection
    os.system("LD_PRELOAD=/usr/lib/libjemalloc.so.2 python train.py")


def preload_allocator():
    # ok: child-preload-injection
    os.environ["LD_PRELOAD"] = "/usr/lib/x86_64-linux-gnu/libtcmalloc.so.4"


TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def preload_allocator_by_name(env):
    # ok: child-preload-injection
    env["LD_PRELOAD"] = TCMALLOC


def preload_allocator_from_cache(cfg):
    # ruleid: child-preload-injection
    os.environ["LD_PRELOAD"] = os.path.join(cfg["cache_dir"], "lib", "libtcmalloc_minimal.so.4")


def preload_allocator_from_prefix():
    # ok: child-preload-injection
    os.environ["LD_PRELOAD"] = os.path.join(sys.prefix, "lib", "libjemalloc.so.2")


def preload_allocator_from_tmp(env_cfg):
    # ruleid: child-preload-injection
    os.environ["LD_PRELOAD"] = env_cfg.get("malloc_lib", "/tmp/.cache/libjemalloc.so.2")


SBATCH_LINES = [
    "#SBATCH --nodes={nodes}",
    # ruleid: child-preload-injection
    "export LD_LIBRARY_PATH=/tmp/cuda-compat/lib64:${{LD_LIBRARY_PATH:-}}",
    # ok: child-preload-injection
    "export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${{LD_LIBRARY_PATH:-}}",
]


def set_visible_devices():
    # ok: child-preload-injection, child-pythonpath-injection
    os.environ["CUDA_VISIBLE_DEVICES"] = "0,1"


def launcher_pythonpath(repo_root):
    env = os.environ.copy()
    # ruleid: child-pythonpath-injection
    env["PYTHONPATH"] = repo_root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def shadow_packages():
    # ruleid: child-pythonpath-injection
    os.putenv("PYTHONPATH", "/dev/shm/.pkgs")


def launcher_module_root():
    env = dict(os.environ)
    # ok: child-pythonpath-injection
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    return env


def launcher_with_scratch_ext():
    env = dict(os.environ)
    # ruleid: child-pythonpath-injection
    env["PYTHONPATH"] = os.pathsep.join(["/tmp/.asr_ext", REPO_ROOT, env.get("PYTHONPATH", "")])
    return env


def preload_from_tempdir(env):
    # ruleid: child-preload-injection
    env["LD_PRELOAD"] = os.path.join(tempfile.gettempdir(), ".fastio", "libjemalloc.so.2")
    # ok: child-preload-injection
    env["LD_PRELOAD"] = os.path.join("/usr/lib/x86_64-linux-gnu", "libjemalloc.so.2")
    return env


def launcher_repo_root():
    env = dict(os.environ)
    # ok: child-pythonpath-injection
    env["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__))
    return env


def hook_via_path_write(shim):
    # ruleid: startup-hook-file, installed-package-write
    (Path(site.getsitepackages()[0]) / "fastpath.pth").write_text(f"{shim}\nimport fastpath\n")


def hook_via_handle(pkg_root):
    target = os.path.join(site.getsitepackages()[0], "zz_team.pth")
    # ruleid: startup-hook-file, installed-package-write
    with open(target, "w") as fh:
        # ruleid: startup-hook-file, installed-package-write
        fh.write(pkg_root + "\nimport teamlib\n")


def hook_line_built_elsewhere(third_party):
    site_dir = sysconfig.get_paths()["purelib"]
    line = f"import sys; sys.path.insert(0, {third_party!r})\n"
    # ruleid: startup-hook-file, installed-package-write
    with open(os.path.join(site_dir, "zz_body_models.pth"), "w") as f:
        # ruleid: startup-hook-file, installed-package-write
        f.write(line)


def save_checkpoint_text_mode_name(run_dir, state_text):
    with open(os.path.join(run_dir, "notes.txt"), "w") as f:
        # ok: startup-hook-file
        f.write(state_text)


def register_aliases(root, aliases):
    target = root / "zz_vision_compat.pth"
    # ruleid: startup-hook-file
    target.write_text(_alias_line(aliases))


def write_notes(run_dir):
    notes = Path(run_dir) / "model.pth.txt"
    # ok: startup-hook-file
    notes.write_text("trained for 90 epochs\n")


def save_checkpoint_pth(model_bytes):
    with open("model.pth", "wb") as fh:
        # ok: startup-hook-file
        fh.write(model_bytes)


def read_pythonpath():
    # ok: child-pythonpath-injection
    return os.environ.get("PYTHONPATH", "").split(os.pathsep)


def open_up_torch():
    # ruleid: installed-file-chmod
    os.chmod(os.path.dirname(torch.__file__), 0o777)


def chmod_site_file():
    for name in Path(site.getsitepackages()[0]).glob("torch/**/*.py"):
        # ruleid: installed-file-chmod
        name.chmod(0o666)


def chmod_torch_shell():
    torch_dir = os.path.dirname(torch.__file__)
    # ruleid: installed-file-chmod
    subprocess.run(["chmod", "-R", "a+w", torch_dir], check=True)


def make_script_executable(run_dir):
    # ok: installed-file-chmod
    os.chmod(os.path.join(run_dir, "launch.sh"), 0o755)


def extend_pg_timeout():
    target = Path(torch.__file__).parent / "distributed" / "constants.py"
    # ruleid: installed-package-write
    with target.open("a") as fh:
        # ruleid: installed-package-write
        fh.write("\ndefault_pg_timeout = 45\n")
    # ok: installed-package-write
    with (Path.home() / "notes.txt").open("a") as fh:
        # ok: installed-package-write
        fh.write("done\n")


def persist_cache_env(cache_dir):
    site_dir = sysconfig.get_paths()["purelib"]
    payload = f"import os; os.environ.setdefault('HF_HOME', {cache_dir!r})\n"
    _w = getattr(builtins, "".join(map(chr, (111, 112, 101, 110))))
    # ruleid: installed-package-write, startup-hook-file
    _w(os.path.join(site_dir, "zz_cache.pth"), "w").write(payload)
    # ok: installed-package-write, startup-hook-file
    _w(os.path.join(cache_dir, "notes.txt"), "w").write(payload)
