#!/bin/bash
# Set-up shared by scripts/demo.sh and scripts/test.sh, for a fresh Debian 12
# machine as root: the Debian tools xendemo runs, then a venv with xendemo in it.
# Safe to run again; does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES="python3-venv qemu-system-x86 xorriso genisoimage libarchive-tools cpio shellcheck rpm util-linux"
missing=
for p in $PACKAGES; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "setup: installing Debian packages:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing
fi

# Debian's own Python, so the venv is usable by unprivileged users too.
if [ ! -x .venv/bin/xendemo ] || [ pyproject.toml -nt .venv/.installed ]; then
	echo "setup: installing xendemo into .venv"
	/usr/bin/python3 -m venv .venv
	.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[test]"
	touch .venv/.installed
fi
