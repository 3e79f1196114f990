#!/usr/bin/env bash
# Set-up for a fresh Debian 12 or 13 machine, idempotent: each stage is skipped while
# what it depends on is unchanged (stamps in .stamps/ hold the hashes).
#   1. Debian packages: R, the R packages we use (no CRAN here), GDAL tools, pandoc.
#   2. .venv: the Python package and its dependencies, with pins for the R bridge.
#   3. .rlib: the R package, installed from this checkout (with inst/python synced).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
mkdir -p .stamps

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

DEBS=(r-base-core r-cran-reticulate r-cran-testthat r-cran-terra r-cran-sf r-cran-jsonlite
      r-cran-knitr r-cran-rmarkdown r-cran-codetools r-cran-roxygen2 pandoc gdal-bin
      python3-venv)

missing_debs() {
  local p
  for p in "${DEBS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || echo "$p"
  done
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

stage_debian() {
  local missing
  missing=$(missing_debs | tr '\n' ' ')
  [ -z "$missing" ] && return 0
  say "installing Debian packages: $missing"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  # shellcheck disable=SC2086
  as_root apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# The interpreter for the venv: RSUNET_BUILD_PYTHON, else the first python3 with a
# shared libpython (reticulate embeds it) and a TensorFlow wheel (3.10-3.13).
pick_python() {
  local c
  for c in ${RSUNET_BUILD_PYTHON:-} python3.11 python3.12 python3 python3.13 python3.10; do
    command -v "$c" >/dev/null 2>&1 || continue
    "$c" - <<'PY' 2>/dev/null && { command -v "$c"; return 0; }
import sys, sysconfig, venv
ok = (3, 10) <= sys.version_info[:2] <= (3, 13) and sysconfig.get_config_var("Py_ENABLE_SHARED")
sys.exit(0 if ok else 1)
PY
  done
  echo "setup: no Python 3.10-3.13 with a shared libpython found; set RSUNET_BUILD_PYTHON" >&2
  return 1
}

# Pins for the environment R binds to, from what this machine's R can handle: the R
# package's own rule (.bridge_constraints() in R/install.R, which install_rsunet() uses),
# plus rpy2's for the bridge from Python (rpy2-rinterface >= 3.6.6 needs R >= 4.5).
write_constraints() {
  Rscript --vanilla -e '
    source("R/install.R")
    writeLines(.bridge_constraints())
    if (getRversion() < "4.5.0") cat("rpy2==3.6.6\nrpy2-rinterface==3.6.5\nrpy2-robjects==3.6.6\n")
  ' > .stamps/constraints.txt
}

stage_venv() {
  write_constraints
  local want
  want=$(hash_of pyproject.toml .stamps/constraints.txt tools/setup.sh)
  if [ -x .venv/bin/python ] && [ "$(cat .stamps/venv 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  local py
  py=$(pick_python)
  say "creating .venv with $py ($("$py" --version)) and installing rsunet[cpu,r,dev,dask]"
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  export RPY2_CFFI_MODE=ABI
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c .stamps/constraints.txt -e ".[cpu,r,dev,dask]"
  # the checkout's python/ as a plain sys.path entry too: the editable install's import
  # hook comes after sys.path, so a folder named rsunet in the working directory (R CMD
  # check runs the examples beside the installed R package's rsunet/) would shadow the
  # package as a namespace package; a regular package on sys.path wins over that
  echo "$ROOT/python" > "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/rsunet-checkout.pth"
  echo "$want" > .stamps/venv
}

stage_rlib() {
  bash tools/sync_python.sh   # inst/python: the Python package the R package carries
  local want
  want=$(find DESCRIPTION NAMESPACE R man inst vignettes -type f -not -path '*/__pycache__/*' 2>/dev/null | sort | xargs cat | sha256sum | cut -c1-16)
  if [ -f .rlib/rsunet/DESCRIPTION ] && [ "$(cat .stamps/rlib 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  say "installing the R package into .rlib"
  mkdir -p .rlib
  R CMD INSTALL --no-multiarch --library=.rlib . >.stamps/rlib.log 2>&1 ||
    { cat .stamps/rlib.log; exit 1; }
  echo "$want" > .stamps/rlib
}

stage_debian
stage_venv
stage_rlib
say "ready: Python $(.venv/bin/python -c 'import platform; print(platform.python_version())'), $(R --version | head -1 | cut -d' ' -f1-3)"
