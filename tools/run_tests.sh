#!/usr/bin/env bash
# Every test: pytest, testthat, R CMD check, then the packages installed as a user would. Runs all three and fails if any failed,
# so one broken suite does not hide the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
status=0
# each suite has a time limit (minutes, about twice its time on 2 AVX2 cores: 18, 8, 12, 6):
# a hang fails that suite with a message and the others still run
step() {
  local title=$1 limit=$2 rc=0 start=$SECONDS; shift 2
  printf '\n\033[1m== %s\033[0m\n' "$title"
  timeout --kill-after=30 "${limit}m" "$@" || rc=$?
  echo "-- $title: $((SECONDS - start)) s"   # CI's goal is well under 30 min in all
  [ "$rc" = 124 ] && echo "TIMED OUT: ran past its ${limit} minutes"
  [ "$rc" = 0 ] || { echo "FAILED (exit status $rc): $*"; status=1; }
}
step "Python suite (pytest)" 35 .venv/bin/python -m pytest
step "R suite (testthat)" 20 Rscript tools/run_testthat.R
step "R CMD check" 25 bash tools/rcheck.sh
step "Installed packages (R tarball -> install_rsunet(); wheel -> rsunet demo --quick)" 15 \
  env RSUNET_TARBALL="$(ls .check/rsunet_*.tar.gz 2>/dev/null | head -1)" bash tools/test_install.sh
exit $status
