"""Run inside kinfer/model-server:<version>-gpu (``make images-gpu`` does): the CUDA builds of ONNX Runtime
and TensorFlow are installed, and the CUDA libraries they load resolve from the image alone, the NVIDIA
driver's libcuda.so.1 aside (a GPU node's container runtime mounts it; this machine has none, so no
kernel runs on a GPU here).

    podman run --rm -i --entrypoint python kinfer/model-server:<version>-gpu - < images/gpu_check.py
"""

import ctypes
import glob
import os
import subprocess
import sys

failures: list[str] = []


def unresolved(lib: str) -> list[str]:
    """ldd's "not found" lines of ``lib``, the driver's libcuda.so.1 excepted."""
    out = subprocess.run(["ldd", lib], capture_output=True, text=True, check=False).stdout
    return [line.strip() for line in out.splitlines() if "not found" in line and "libcuda.so" not in line]


import onnxruntime as ort  # noqa: E402

providers = ort.get_available_providers()
print(f"onnxruntime {ort.__version__} ({ort.get_device()}): providers {providers}")
if "CUDAExecutionProvider" not in providers:
    failures.append("onnxruntime: no CUDAExecutionProvider (the CPU-only wheel?)")
capi = os.path.join(os.path.dirname(ort.__file__), "capi")
for lib in sorted(glob.glob(os.path.join(capi, "libonnxruntime_providers_*.so"))):
    missing = unresolved(lib)
    print(f"  ldd {os.path.basename(lib)}: {'all resolved' if not missing else missing}")
    if missing and "tensorrt" not in lib:  # TensorRT is not a dependency of onnxruntime-gpu or TensorFlow
        failures.append(f"{os.path.basename(lib)}: {missing}")

import tensorflow as tf  # noqa: E402

info = tf.sysconfig.get_build_info()
print(f"tensorflow {tf.__version__}: built with CUDA {tf.test.is_built_with_cuda()}, "
      f"CUDA {info.get('cuda_version')}, cuDNN {info.get('cudnn_version')}; "
      f"GPUs visible here: {tf.config.list_physical_devices('GPU')}")
if not tf.test.is_built_with_cuda():
    failures.append("tensorflow: not built with CUDA")
cuda_major = str(info.get("cuda_version", "12")).split(".")[0]
cudnn_major = str(info.get("cudnn_version", "9")).split(".")[0]
for name in (f"libcudart.so.{cuda_major}", f"libcublas.so.{cuda_major}", f"libcublasLt.so.{cuda_major}",
             f"libcudnn.so.{cudnn_major}", "libcufft.so.11", f"libcusparse.so.{cuda_major}", "libnccl.so.2",
             f"libnvrtc.so.{cuda_major}"):
    try:
        ctypes.CDLL(name)
        print(f"  dlopen {name}: ok")
    except OSError as exc:
        print(f"  dlopen {name}: {exc}")
        failures.append(f"dlopen {name}: {exc}")

if failures:
    print("FAILED:\n  " + "\n  ".join(failures))
    sys.exit(1)
print("GPU variant: CUDA runtimes installed and loadable (the driver comes from the GPU node)")
