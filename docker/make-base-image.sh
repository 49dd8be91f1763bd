#!/usr/bin/env bash
# Build a Debian bookworm base image with Python 3.11 and pip, without pulling
# anything from a registry (for offline CI): debootstrap + docker import.
#   docker/make-base-image.sh [TAG]        (default: visionpipe/base:bookworm)
# Needs root, debootstrap and a running Docker engine. The Debian mirror is
# DEBIAN_MIRROR, or else the one this machine's own apt sources use (no mirror
# host is written into the project).
set -euo pipefail
tag="${1:-visionpipe/base:bookworm}"
host_mirror() {
    # deb822 (/etc/apt/sources.list.d/*.sources: "URIs: ...") or one-line sources.list
    { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true
      grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
        sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}' || true
    } 2>/dev/null | grep -v -i security | head -n 1 || true
}
mirror="${DEBIAN_MIRROR:-$(host_mirror)}"
if [ -z "$mirror" ]; then
    echo "make-base-image: no Debian mirror: set DEBIAN_MIRROR=<your mirror's URL>" >&2
    exit 2
fi
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
