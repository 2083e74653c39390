#!/usr/bin/env bash
# What `pip install cnnfeat` costs: the wheel built from this checkout, installed with its dependencies into a
# fresh venv (wall time, size on disk, number of packages), then the built-in default run from another folder,
# offline data, from an empty cnnfeat cache (wall time). Usage: bash benchmarks/install_size.sh [PYTHON]
set -euo pipefail
PY="${1:-python3}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" "$ROOT" >/dev/null
"$PY" -m venv "$WORK/venv"
start=$(date +%s.%N)
"$WORK/venv/bin/pip" install --quiet --no-cache-dir "$WORK"/dist/cnnfeat-*.whl
end=$(date +%s.%N)
echo "wheel: $(du -h "$WORK"/dist/cnnfeat-*.whl | cut -f1)"
echo "install: $("$PY" -c "print(round($end - $start, 1))") s wall, $(du -sh "$WORK/venv" | cut -f1) on disk, $("$WORK/venv/bin/pip" list 2>/dev/null | tail -n +3 | wc -l) packages"
echo "largest: $(cd "$WORK"/venv/lib/python3*/site-packages && du -sm -- * | sort -rn | head -6 | awk '{printf "%s %s MB; ", $2, $1}')"
mkdir "$WORK/run"
cd "$WORK/run"
start=$(date +%s.%N)
CNNFEAT_CACHE="$WORK/cache" "$WORK/venv/bin/cnnfeat" benchmark --no-progress >"$WORK/table.txt" 2>"$WORK/stderr.txt"
end=$(date +%s.%N)
head -5 "$WORK/table.txt"
echo "cnnfeat benchmark (no arguments, empty cache): $("$PY" -c "print(round($end - $start, 1))") s wall; $(grep -o 'machine: .*' "$WORK/table.txt")"
