#!/usr/bin/env bash
# The packages as a user installs them, outside this checkout, each timed:
#   R:      R CMD build -> R CMD INSTALL into a temporary library -> install_rsunet() with
#           no arguments into a temporary venv (the tarball alone: the package index is
#           used for dependencies only) -> an example (?predict_raster) in a fresh R.
#   Python: python -m build (an sdist, then the wheel from the sdist) -> the wheel into a
#           fresh venv -> `rsunet demo --quick` from an empty folder.
# RSUNET_TARBALL: use an R tarball built already (run_tests.sh passes tools/rcheck.sh's).
# pip's cache makes the two TensorFlow installs quick after the first. The sides run at once.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PY:-$ROOT/.venv/bin/python}
BASE_PY=$("$PY" -c 'import sys; print(sys._base_executable)')  # the interpreter of .venv
work=$(mktemp -d "${TMPDIR:-/tmp}/rsunet-install-XXXXXX")
[ -n "${RSUNET_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT   # RSUNET_KEEP=1 keeps it for a look
say() { printf '\033[1minstall test:\033[0m %s\n' "$*"; }
fail() { echo "install test FAILED: $*" >&2; for f in "$work"/*.log; do echo "== $f"; tail -40 "$f"; done; exit 1; }
# A user's shell: nothing that points into this checkout, its venv or its R library.
user() {
  env -u PYTHONPATH -u RSUNET_PYTHON -u RETICULATE_PYTHON -u R_LIBS -u R_LIBS_USER \
      -u VIRTUAL_ENV -u RSUNET_EXAMPLE_DATA -u RSUNET_SHARED_DATA -u TF_CPP_MIN_LOG_LEVEL "$@"
}

r_side() {
  local t0=$SECONDS tarball=${RSUNET_TARBALL:-}
  if [ -z "$tarball" ]; then
    bash tools/sync_python.sh
    (cd "$work" && R CMD build --no-build-vignettes --no-manual "$ROOT") > "$work/build.log" 2>&1 ||
      fail "R CMD build"
    tarball=$(ls "$work"/rsunet_*.tar.gz)
  fi
  mkdir -p "$work/rlib" "$work/r-empty"
  R CMD INSTALL --no-multiarch --library="$work/rlib" "$tarball" > "$work/rinstall.log" 2>&1 ||
    fail "R CMD INSTALL $tarball"
  cd "$work/r-empty"
  # RETICULATE_PYTHON: the interpreter reticulate's virtualenv_create() starts from
  user R_LIBS="$work/rlib" RSUNET_HOME="$work/home" RETICULATE_PYTHON="$BASE_PY" \
    Rscript -e 'rsunet::install_rsunet()' > "$work/install_rsunet.log" 2>&1 ||
    fail "install_rsunet()"
  local t_install=$((SECONDS - t0))
  user R_LIBS="$work/rlib" RSUNET_HOME="$work/home" Rscript -e '
    library(rsunet)
    stopifnot(rsunet_available())
    home <- normalizePath(Sys.getenv("RSUNET_HOME"))
    py_file <- reticulate::import("rsunet")$`__file__`
    stopifnot(startsWith(reticulate::py_exe(), home), startsWith(py_file, home))  # the venv, not a checkout
    example("predict_raster", package = "rsunet", ask = FALSE, echo = FALSE)
    values <- terra::unique(terra::rast(file.path(dir, "map.tif")))[[1]]
    stopifnot(length(values) >= 1, all(values %in% c(0, 1)))
    cat("R example ran: rsunet", py_file, "\n")' > "$work/example.log" 2>&1 ||
    fail "the example in a fresh R process"
  cd "$ROOT"
  say "R: tarball -> library -> install_rsunet() ${t_install} s, example $((SECONDS - t0 - t_install)) s"
}

python_side() {
  local t0=$SECONDS
  "$PY" -m build --outdir "$work/dist" "$ROOT" > "$work/build-python.log" 2>&1 || fail "python -m build"
  local sdist wheel
  sdist=$(ls "$work"/dist/rsunet-*.tar.gz) wheel=$(ls "$work"/dist/rsunet-*.whl)
  [ "$(tar tzf "$sdist" | grep -c '/amazon/.*\.tif$')" = 13 ] || fail "the sdist lacks the 13 example chips"
  "$BASE_PY" -m venv "$work/wheel-venv"
  user "$work/wheel-venv/bin/python" -m pip install -q "$wheel[cpu]" > "$work/pip-wheel.log" 2>&1 ||
    fail "pip install $wheel[cpu]"
  local t_install=$((SECONDS - t0))
  mkdir -p "$work/py-empty" && cd "$work/py-empty"
  user "$work/wheel-venv/bin/rsunet" demo --quick > "$work/demo.log" 2>&1 || fail "rsunet demo --quick"
  [ -s rsunet-quick/summary.csv ] || fail "rsunet demo --quick wrote no summary.csv"
  cd "$ROOT"
  say "Python: build -> wheel in a fresh venv ${t_install} s, rsunet demo --quick $((SECONDS - t0 - t_install)) s"
}

# The two sides side by side: most of each is pip unpacking wheels (one core), and they
# share nothing but pip's cache (safe to share). Each side's output is shown when it ends.
start=$SECONDS
( r_side ) > "$work/r-side.out" 2>&1 & r_pid=$!
( python_side ) > "$work/python-side.out" 2>&1 & py_pid=$!
rc=0
wait "$r_pid" || rc=1; cat "$work/r-side.out"
wait "$py_pid" || rc=1; cat "$work/python-side.out"
[ "$rc" = 0 ] || { echo "install test FAILED" >&2; exit 1; }
say "passed in $((SECONDS - start)) s"
