#!/usr/bin/env bash
# Build llama.cpp's OpenAI-compatible server (`llama-server`) once per machine and link it into a venv.
#
#   scripts/install-llama-cpp.sh VENV_DIR
#
# The source is the pinned, hash-checked llama-cpp-python sdist (requirements-engine.txt), which
# carries a full llama.cpp tree. The build goes to $ROPD_HOME/engines/llama.cpp-<version>-<cpu>/
# (default ~/.cache/ropd): a later `make install`, in this clone or a fresh one, reuses it. The
# folder also keeps llama.cpp's HF -> GGUF converter, which ropd uses to serve non-GGUF models.
# Patches in scripts/llama-server-*.patch are applied first (today one: usage counts every sample of
# an `n` request, not only the first). Minutes on 2 cores the first time (cmake, a C++ compiler and
# `patch` are needed), seconds after.
set -euo pipefail
VENV=${1:?usage: install-llama-cpp.sh VENV_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
REQS="$ROOT/requirements-engine.txt"
VERSION=$(sed -n 's/^llama-cpp-python==\([^ ]*\).*/\1/p' "$REQS")
PATCHES=("$ROOT"/scripts/llama-server-*.patch)  # ropd's own fixes, applied to the pinned source
# -march=native builds are specific to the CPU's features, and the patches change the build: key the cache by both.
KEY=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m; cat "${PATCHES[@]}") | sha256sum | cut -c1-10)
HOME_DIR=${ROPD_HOME:-$HOME/.cache/ropd}
DEST="$HOME_DIR/engines/llama.cpp-$VERSION-$KEY"
JOBS=${JOBS:-$(nproc)}

if [ ! -x "$DEST/bin/llama-server" ]; then
    for tool in cmake c++ patch; do
        command -v "$tool" >/dev/null || { echo "install-llama-cpp: '$tool' is missing (Debian: apt-get install cmake g++ patch)" >&2; exit 1; }
    done
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    echo "install-llama-cpp: building llama-server $VERSION into $DEST (about 10 minutes on 2 cores, once)" >&2
    start=$(date +%s)
    "$VENV/bin/pip" download -q --no-deps --no-binary :all: --require-hashes -r "$REQS" -d "$WORK"
    tar -xzf "$WORK"/llama_cpp_python-"$VERSION".tar.gz -C "$WORK"
    SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
    for p in "${PATCHES[@]}"; do patch -s -d "$SRC" -p1 <"$p"; done
    # No network at build time (no prebuilt web UI download, no curl/openssl), static, native CPU kernels.
    cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF >"$WORK/cmake.log"
    cmake --build "$WORK/build" --target llama-server -j "$JOBS" >"$WORK/build.log" || { tail -40 "$WORK/build.log" >&2; exit 1; }
    mkdir -p "$DEST.tmp/bin"
    cp "$WORK/build/bin/llama-server" "$DEST.tmp/bin/"
    cp -r "$SRC/convert_hf_to_gguf.py" "$SRC/conversion" "$SRC/gguf-py" "$SRC/LICENSE" "$DEST.tmp/"
    rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
    echo "install-llama-cpp: built in $(( $(date +%s) - start )) s" >&2
fi
ln -sf "$DEST/bin/llama-server" "$VENV/bin/llama-server"
