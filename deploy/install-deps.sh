#!/usr/bin/env bash
# Installs the Debian 12 packages shardrun builds and tests with.
# Idempotent: installs only what is missing and says nothing when everything is there.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev
  libzmq3-dev cppzmq-dev libprotobuf-dev protobuf-compiler libabsl-dev libspdlog-dev
  libvulkan-dev libshaderc-dev glslc mesa-vulkan-drivers vulkan-validationlayers vulkan-tools
  libsodium-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev iproute2
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
