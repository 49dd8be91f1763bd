#!/usr/bin/env bash
# Build a Debian bookworm base image with Python 3.11 and pip, without pulling
# anything from a registry (for offline CI): debootstrap + docker import.
#   docker/make-base-image.sh [TAG]        (default: visionpipe/base:bookworm)
# Needs root, debootstrap and a running Docker engine; uses the Debian mirror.
set -euo pipefail
tag="${1:-visionpipe/base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-pip,python3-venv,python-is-python3,ca-certificates \
    bookworm "$root" "$mirror"
# the image is the environment, not a system to protect: let pip install into it
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' - "$tag"
echo "$tag"
