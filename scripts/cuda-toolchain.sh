#!/usr/bin/env bash
# Installs what `cargo build --release --features cuda` needs from CUDA 13.0 (update 2) into DIR, from the
# Python package registry, without root and without a GPU or driver, then prints `export` lines:
#
#   eval "$(scripts/cuda-toolchain.sh ~/.cache/langadapt-cuda)"; cargo build --release --features cuda
#
# Why these pieces (candle 0.11.1 -> cudarc 0.19.10 with `dynamic-linking` and `cuda-version-from-build-system`,
# candle-kernels 0.11.1 -> cudaforge):
# - nvcc + crt + nvvm (cicc, libdevice) + cccl + the runtime headers: candle-kernels compiles its .cu files to PTX
#   and its MoE/GGUF kernels to a static library; cudarc reads the CUDA version from `nvcc --version`.
# - libcudart, libnvrtc, libcurand, libcublas, libcublasLt: cudarc links them at build time (`dynamic-linking`), and
#   candle-kernels links cudart. The binary needs them (the .so.13/.so.10 files) at run time too.
# - libcuda (the driver) has no wheel: a stub with the driver API's symbols (each returning
#   CUDA_ERROR_STUB_LIBRARY, as NVIDIA's own stub does) is generated under lib/stubs for the link only; at run time
#   the real libcuda.so.1 of the GPU machine's driver is used.
# CUDA 13.0 and not newer: the GPU machines run driver 580 (CUDA 13.0), and the driver JIT-compiles candle's PTX,
# which it rejects when a newer nvcc wrote it.
#
# CUDA_COMPUTE_CAP (default 90: H100/H200; 80 for A100, 89 for L4/L40): candle-kernels cannot ask a GPU here, so it
# must be told. cudaforge turns 90 into sm_90a, which runs on compute capability 9.0 only.
# A second call with the same DIR installs nothing.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR   (installs the CUDA 13.0 build toolchain into DIR and prints export lines)" >&2
  exit 2
fi
mkdir -p "$1"
dir=$(cd "$1" && pwd)
pins=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-nvrtc==13.0.88
  nvidia-curand==10.4.0.35
  nvidia-cublas==13.1.0.3
)
root="$dir/pkgs/nvidia/cu13"
stamp="$dir/installed.txt"

if [ "$(cat "$stamp" 2>/dev/null)" != "${pins[*]}" ]; then
  python3 -m pip --version >/dev/null 2>&1 || { echo "$0: needs python3 with pip" >&2; exit 1; }
  command -v cc >/dev/null || { echo "$0: needs a C compiler (cc) for the driver stub and nvcc's host code" >&2; exit 1; }
  rm -rf "$dir/pkgs" "$stamp"
  echo "installing ${pins[*]} into $dir/pkgs" >&2
  python3 -m pip install -q --disable-pip-version-check --no-deps --target "$dir/pkgs" "${pins[@]}" >&2
  # The wheels ship only versioned sonames; the linker's -lNAME wants libNAME.so.
  for lib in "$root"/lib/lib*.so.*; do
    name=$(basename "$lib")
    ln -sf "$name" "$root/lib/${name%%.so.*}.so"
  done
  # The driver stub: every cu* function that cuda.h declares, after the preprocessor (so the _v2/_v3 names the
  # headers map to are the ones exported).
  mkdir -p "$root/lib/stubs"
  cc -E -P -I"$root/include" "$root/include/cuda.h" |
    grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d '( \t' | sort -u |
    sed 's/.*/int &(void) { return 34; }/' >"$root/lib/stubs/cuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$root/lib/stubs/cuda_stub.c"
  "$root/bin/nvcc" --version | grep -q 'release 13.0' || { echo "$0: nvcc in $root/bin is not CUDA 13.0" >&2; exit 1; }
  echo "${pins[*]}" >"$stamp"
fi

echo "export CUDA_ROOT='$root'"
echo "export CUDA_PATH='$root'"
echo "export CUDA_HOME='$root'"
echo "export NVCC='$root/bin/nvcc'"
echo "export PATH='$root/bin':\"\$PATH\""
echo "export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}"
