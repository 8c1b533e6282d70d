#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages qcal needs to build and test. Idempotent: installs only what is missing.
# Usage: scripts/install-deps.sh [--with-fuzz]
set -euo pipefail

pkgs=(build-essential cmake pkg-config
      libopenblas-dev liblapacke-dev
      libcjson-dev libpcre2-dev libutf8proc-dev
      libyaml-dev zlib1g-dev libzstd-dev libsnappy-dev libcurl4-openssl-dev
      libcmocka-dev python3 python3-matplotlib zstd)
if [[ "${1:-}" == "--with-fuzz" ]]; then
    pkgs+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all ${#pkgs[@]} packages present"
    exit 0
fi
echo "install-deps: missing: ${missing[*]}"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "install-deps: not root and no sudo: install these packages as root: ${missing[*]}" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
