#!/usr/bin/env bash
# Every test: pytest, testthat, R CMD check, then the packages installed as a user would. Runs all three and fails if any failed,
# so one broken suite does not hide the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
# each suite has a time limit (minutes, about twice its time on 2 cores): a hang fails that
# suite and the others still run, all within CI's 90 minutes
step() {
  printf '\n\033[1m== %s\033[0m\n' "$1"
  local limit=$2; shift 2
  timeout --kill-after=30 "${limit}m" "$@" || { echo "FAILED ($?; 124: over ${limit} min): $*"; status=1; }
}
step "Python suite (pytest)" 30 .venv/bin/python -m pytest
step "R suite (testthat)" 20 Rscript tools/run_testthat.R
step "R CMD check" 12 bash tools/rcheck.sh
step "Installed packages (R tarball -> install_rsunet(); wheel -> rsunet demo --quick)" 10 \
  env RSUNET_TARBALL="$(ls .check/rsunet_*.tar.gz 2>/dev/null | head -1)" bash tools/test_install.sh
exit $status
