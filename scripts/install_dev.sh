#!/usr/bin/env bash
# Install tango-edge (editable) with everything the build scripts and the tests need, CPU-only.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet torch==2.13.0
python -m pip install --quiet -c scripts/constraints.txt -e ".[scripts,test,plots,serve,ray]"
# optimum-intel pulls torchvision, whose PyPI wheel is a CUDA build that breaks `from optimum.intel import ...`;
# nothing here uses it.
python -m pip uninstall --quiet -y torchvision 2>/dev/null || true
python -c "import tango_edge._core, optimum.intel, nncf, torch, ray.data; print('tango-edge dev install ok: torch', torch.__version__)"
