#!/usr/bin/env bash
# inst/python/: the Python package as the R package carries it, generated from python/ and
# pyproject.toml (the only hand-edited copies; inst/python is git-ignored). Run by
# tools/setup.sh before installing the R package, by tools/rcheck.sh before R CMD build,
# and by tools/test_install.sh. install_rsunet() pip-installs this folder.
# Usage: tools/sync_python.sh [DEST]   (DEST defaults to inst/python)
# The example chips are not copied: the R package has them in inst/extdata/amazon and
# tells Python where (RSUNET_EXAMPLE_DATA, set when the R package loads).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-inst/python}
rm -rf "$dest"
mkdir -p "$dest/python"
cp -R python/rsunet "$dest/python/"
find "$dest" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
sed '/# not in the R bundle/d' pyproject.toml > "$dest/pyproject.toml"
cp README.md "$dest/README.md"
