#!/bin/bash
# Slims the working tree for a lent GPU machine, whose upload is limited to 64 MiB (tracked files,
# untracked files that git does not ignore, and carried paths): the model bundles (about 38 MB)
# are not needed there, only models/<default>.weights.npz and the packed photos (.gpudata, 45 MB).
#
#   bash training/gpu_tree.sh off   # untrack models/*/ for the upload (the files stay on disk)
#   ... run training/gpu_run.sh on the device with carry [".gpudata"] ...
#   bash training/gpu_tree.sh on    # track them again (run before committing)
#
# "off" also packs the photos into .gpudata when it is missing.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
EXCL=.git/info/exclude
case "${1:-}" in
  off)
    grep -qx "/.gpudata/" "$EXCL" || echo "/.gpudata/" >> "$EXCL"
    [ -d .gpudata ] || python3 training/pack_data.py ../shared/data/train .gpudata
    for d in models/*/; do
      d=${d%/}
      git rm -r -q --cached "$d" 2>/dev/null || true
      grep -qx "/$d/" "$EXCL" || echo "/$d/" >> "$EXCL"
    done
    echo "bundles untracked for the upload; travelling: $(git ls-files | xargs du -cb 2>/dev/null | tail -1 | cut -f1) bytes tracked + .gpudata $(du -sb .gpudata | cut -f1) bytes"
    ;;
  on)
    for d in models/*/; do
      d=${d%/}
      sed -i "\#^/$d/\$#d" "$EXCL"
      git add "$d"
    done
    git status --short models
    ;;
  *)
    echo "usage: $0 off|on" >&2
    exit 2
    ;;
esac
