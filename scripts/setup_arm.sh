#!/usr/bin/env bash
# The emulated arm64 lane's tools (run by `bash scripts/setup.sh --arm`, or alone after setup.sh):
#   - Debian's aarch64 cross compiler (g++-aarch64-linux-gnu, libc6-dev-arm64-cross): installed with apt-get,
#     system-wide, because Debian's cross gcc is laid out for /usr; its packages also bring the arm64 runtime
#     (glibc, libstdc++, the loader) under /usr/aarch64-linux-gnu, which is the sysroot the lane uses;
#   - qemu's user-mode emulator from Debian 13 (qemu 10.x: it has the cortex-a710 / neoverse-n2 CPU models
#     that Debian 12's qemu 7.2 lacks; the binaries are static): unpacked with dpkg -x into .arm/qemu, through a
#     private apt state in .arm/apt, so the system's apt sources are not touched;
#   - the aarch64 executorch wheel of the version in .venv (pip download, never installed), unpacked into
#     .arm/executorch-<version>: its CMake package and Arm kernels are what the harness cross-builds against.
# Idempotent: each step is skipped when its result is already there. Writes .arm/arm.env, which
# exporter/device/cross.py and the tests read. Nothing here runs without --arm.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
ARM=$ROOT/.arm
mkdir -p "$ARM"
say() { echo "setup --arm: $*"; }

PY=${PY:-$ROOT/.venv/bin/python}
[[ -x $PY ]] || { echo "setup --arm: $PY missing: run bash scripts/setup.sh first" >&2; exit 1; }

# ------------------------------------------------------------------------------------ cross compiler
if command -v aarch64-linux-gnu-g++ >/dev/null && [[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ]]; then
  say "cross compiler: $(aarch64-linux-gnu-g++ -dumpfullversion) already installed"
else
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup --arm: installing the cross compiler needs root: apt-get install g++-aarch64-linux-gnu libc6-dev-arm64-cross" >&2
    exit 1
  fi
  say "cross compiler: apt-get install g++-aarch64-linux-gnu libc6-dev-arm64-cross (system-wide)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    g++-aarch64-linux-gnu libc6-dev-arm64-cross >/dev/null
fi
SYSROOT=/usr/aarch64-linux-gnu

# ------------------------------------------------------------------------------------ qemu (Debian 13)
QEMU=$ARM/qemu/usr/bin/qemu-aarch64
has_n2() { [[ -x $QEMU ]] && [[ $("$QEMU" -cpu help) == *neoverse-n2* ]]; }
if has_n2; then
  say "qemu: $("$QEMU" --version | head -1) already in .arm/qemu"
else
  say "qemu: downloading Debian 13's qemu-user (static) into .arm/qemu"
  mkdir -p "$ARM/apt/lists/partial" "$ARM/apt/cache/archives/partial" "$ARM/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" \
    > "$ARM/apt/sources.list"
  APT_OPTS=(-o "Dir::Etc::SourceList=$ARM/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$ARM/apt/lists" -o "Dir::Cache=$ARM/apt/cache" -o Debug::NoLocking=1
            -o APT::Sandbox::User=root)
  apt-get "${APT_OPTS[@]}" update -qq
  rm -f "$ARM"/debs/qemu-user_*.deb
  (cd "$ARM/debs" && apt-get "${APT_OPTS[@]}" download qemu-user >/dev/null)
  rm -rf "$ARM/qemu"
  dpkg -x "$ARM"/debs/qemu-user_*.deb "$ARM/qemu.tmp"
  rm -f "$ARM"/debs/qemu-user_*.deb
  # Only the aarch64 emulator is used (the package holds one ~10 MB static binary per guest architecture).
  mkdir -p "$ARM/qemu/usr/bin"
  mv "$ARM/qemu.tmp/usr/bin/qemu-aarch64" "$QEMU"
  rm -rf "$ARM/qemu.tmp"
  has_n2 || { echo "setup --arm: this qemu lacks the neoverse-n2 CPU model" >&2; exit 1; }
  say "qemu: $("$QEMU" --version | head -1)"
fi

# ------------------------------------------------------------------------------------ aarch64 executorch
ET_VERSION=$("$PY" -c 'from importlib.metadata import version; print(version("executorch"))')
ET_DIR=$ARM/executorch-$ET_VERSION
if [[ -f $ET_DIR/executorch/share/cmake/executorch-config.cmake ]]; then
  say "executorch $ET_VERSION (manylinux_2_28_aarch64, cp311) already unpacked in ${ET_DIR#"$ROOT"/}"
else
  say "executorch $ET_VERSION: downloading the manylinux_2_28_aarch64 wheel (not installed, only unpacked)"
  mkdir -p "$ARM/wheels"
  "$PY" -m pip download -q --only-binary=:all: --platform manylinux_2_28_aarch64 --python-version 3.11 \
    --no-deps -d "$ARM/wheels" "executorch==$ET_VERSION" 2>&1 | grep -v "is ignored: it is neither" || true
  WHEEL=$(ls "$ARM"/wheels/executorch-"$ET_VERSION"-*aarch64*.whl)
  rm -rf "$ET_DIR.tmp"
  "$PY" - "$WHEEL" "$ET_DIR.tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    # Only what the native build and run need: the C++ package (headers, CMake, shared libraries).
    for name in z.namelist():
        if name.startswith(("executorch/share/", "executorch/include/", "executorch/lib/")):
            z.extract(name, sys.argv[2])
PY
  rm -rf "$ET_DIR" && mv "$ET_DIR.tmp" "$ET_DIR"
  rm -f "$WHEEL"
  say "executorch $ET_VERSION unpacked in ${ET_DIR#"$ROOT"/}"
fi

cat > "$ARM/arm.env" <<EOF
# written by scripts/setup_arm.sh; read by exporter/device/cross.py
QEMU=$QEMU
SYSROOT=$SYSROOT
EXECUTORCH_DIR=$ET_DIR/executorch
EXECUTORCH_VERSION=$ET_VERSION
CXX=$(command -v aarch64-linux-gnu-g++)
CC=$(command -v aarch64-linux-gnu-gcc)
EOF
say "arm64 lane ready (.arm/arm.env); run: .venv/bin/python -m pytest -m arm"
