#!/bin/bash
# Build the bundled demo CD from Debian's Xen, Linux, GRUB legacy and busybox,
# then boot it in QEMU.  The CD lands in build/demo/xendemo-1.0.iso.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/xendemo demo -C build/demo "$@"
