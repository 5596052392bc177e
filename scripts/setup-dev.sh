#!/usr/bin/env bash
# Set up everything the test suite needs on a Debian machine: system packages (the real
# components the integration tests start themselves) and mngr with its dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  docker.io          # dockerd for the docker backend tests
  iproute2           # ip: the test that a private dockerd leaves the machine's interfaces
  openssh-server     # sshd on loopback for the ssh and remote-docker tests
  openssh-client
  rsync              # push/pull: rsync over mngr's transport, and its tests and bench
  busybox-static     # the static binary the local test image is built from
  zsh fish           # the completion scripts are tested in each shell
)

if command -v apt-get >/dev/null 2>&1; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

python3 -m pip install -q --upgrade pip
python3 -m pip install -q -e '.[dev]'
