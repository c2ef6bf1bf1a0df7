#!/usr/bin/env bash
# Installs what is missing, builds, and runs the whole test suite:
#   1. a release build and every test (ctest),
#   2. a clang build with AddressSanitizer + UndefinedBehaviorSanitizer running the parser
#      tests (model files, tokenizer) and each libFuzzer target for a bounded time.
# Usage: bash deploy/test.sh        (from the repository root; ../shared must exist)
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

bash deploy/install-deps.sh

echo "== release build and full test suite"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure -j"$jobs" --timeout 900

echo "== sanitizer build (clang, ASan + UBSan): parser tests and fuzzers"
CC=clang CXX=clang++ cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSHARDRUN_SANITIZE=ON -DSHARDRUN_FUZZ=ON >/dev/null
cmake --build build-sanitize -j"$jobs" --target sanitizer_suite
ctest --test-dir build-sanitize --output-on-failure -j"$jobs" -L 'parser|fuzz' --timeout 900
echo "== all tests passed"
