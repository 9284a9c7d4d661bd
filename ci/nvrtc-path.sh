#!/usr/bin/env bash
# Prints the directory holding libnvrtc.so.13 from PyPI's nvidia-cuda-nvrtc;
# fails when it is not installed.
set -euo pipefail
python3 - <<'PY'
import pathlib, sys
try:
    import nvidia
except ImportError:
    sys.exit(1)
for root in nvidia.__path__:
    for lib in pathlib.Path(root).glob("*/lib/libnvrtc.so.1*"):
        print(lib.parent)
        sys.exit(0)
sys.exit(1)
PY
