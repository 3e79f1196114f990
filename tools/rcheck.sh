#!/usr/bin/env bash
# R CMD build (which runs the vignette) + R CMD check of the R package (all but its tests and
# vignette runs); fails on any ERROR or WARNING.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .check && mkdir -p .check
bash tools/sync_python.sh   # the R package carries the Python package (inst/python)
version=$(sed -n 's/^Version: *//p' DESCRIPTION)
(cd .check && R CMD build --no-manual ..) > .check/build.log 2>&1 || { cat .check/build.log; exit 1; }
rc=0
# --no-tests: the R suite runs once, as make test's own step (tools/run_testthat.R, on the
# same sources installed in .rlib); running it again here doubled the R time in CI (12 min)
# --no-vignettes: R CMD build above has just run the vignette's code to make its HTML (and
# fails if it errs); check ran it twice more (once alone, once rebuilding), 76 s of CI
(cd .check && R CMD check --no-manual --no-tests --no-vignettes "rsunet_${version}.tar.gz") > .check/check.log 2>&1 || rc=$?
grep -E '^\* checking .*(ERROR|WARNING|NOTE)|^Status:' .check/check.log || true
if [ $rc -ne 0 ] || grep -qE '^Status:.*(ERROR|WARNING)' .check/check.log; then
  cat .check/check.log
  for f in .check/rsunet.Rcheck/tests/*.Rout.fail; do [ -f "$f" ] && tail -60 "$f"; done
  exit 1
fi
# The examples run under rsunet_available(): in CI they must have run, not been skipped.
if [ "${CI:-}" = true ] && ! grep -q '^<rsunet_model>' .check/rsunet.Rcheck/rsunet-Ex.Rout; then
  echo "R CMD check: the examples did not run (rsunet_available() was FALSE)"
  exit 1
fi
echo "R CMD check: $(grep '^Status:' .check/check.log)"
