#!/usr/bin/env bash
# Build the production image without a Docker daemon or a container registry, with podman from
# Debian's packages: a Debian bookworm base with Python made here by debootstrap (the machines
# that run CI reach package registries only, not Docker Hub), then the repository's Dockerfile
# on top of it (--build-arg PYTHON_IMAGE). RUN steps use chroot isolation: these machines'
# sandboxes refuse the OCI runtime's setrlimit and cgroup set-up, which `podman run` needs.
#
#   deploy/container/build.sh [TAG]        (default localhost/broadcaster:test; needs root)
#
# Installs podman and debootstrap with apt-get when they are missing. The base is built once and
# kept as localhost/debian-python:bookworm.
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:-localhost/broadcaster:test}"
base="localhost/debian-python:bookworm"
export DEBIAN_FRONTEND=noninteractive
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends podman debootstrap >/dev/null
fi
if ! podman image exists "$base"; then
    rootfs="$(mktemp -d)"
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    ln -sf python3 "$rootfs/usr/bin/python"  # the Dockerfile calls `python`, as python:* images have
    # This machine's trust store: pip in the build reaches PyPI through the same network.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import --quiet - "$base" >/dev/null
fi
podman build --quiet --format docker --isolation chroot --network host \
    --build-arg PYTHON_IMAGE="$base" -t "$tag" . >/dev/null
echo "$tag"
