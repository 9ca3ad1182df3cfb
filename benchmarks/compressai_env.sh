#!/usr/bin/env bash
# A separate environment for the CompressAI rows of benchmarks/speed.py. CompressAI 1.2.8 pins
# numpy<2 and imports torch_geometric (and torchvision) when imported, so it never goes into the
# project's own environment. Usage:
#   bash benchmarks/compressai_env.sh            # creates benchmarks/.venv-compressai
#   python benchmarks/speed.py --codecs fastcodec,compressai
# torch==2.13.0 is the CPU build. torchvision wheels here are CUDA builds whose operators do not
# load against CPU torch; speed.py then gives CompressAI an empty torchvision.transforms, which
# it only reads to list transform classes (the models do not use it).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
$PY -m venv .venv-compressai
.venv-compressai/bin/pip install -q torch==2.13.0 compressai==1.2.8 "numpy<2" pillow
.venv-compressai/bin/python -c "import compressai, torch; print('compressai', compressai.__version__, 'torch', torch.__version__)" 2>/dev/null \
  || echo "compressai installed; it imports only through benchmarks/speed.py's torchvision stand-in"
