#!/usr/bin/env bash
# Every test: pytest, testthat, R CMD check, then the packages installed as a user would. Runs all three and fails if any failed,
# so one broken suite does not hide the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
step() { printf '\n\033[1m== %s\033[0m\n' "$1"; shift; "$@" || { echo "FAILED: $*"; status=1; }; }
step "Python suite (pytest)" .venv/bin/python -m pytest
step "R suite (testthat)" Rscript tools/run_testthat.R
step "R CMD check" bash tools/rcheck.sh
step "Installed packages (R tarball -> install_rsunet(); wheel -> rsunet demo --quick)" \
  env RSUNET_TARBALL="$(ls .check/rsunet_*.tar.gz 2>/dev/null | head -1)" bash tools/test_install.sh
exit $status
