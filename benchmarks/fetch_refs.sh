#!/usr/bin/env bash
# fetch_refs.sh [MIRROR_DIR] [OUT_DIR]: the reference implementations' own source files, extracted at the
# commits the parity data were made with, into OUT_DIR (default: .refs/ at the project root, git-ignored).
# They are read and run by benchmarks/ref_parity.py on the device; they never enter the repository.
#
# MIRROR_DIR holds bare git clones named owner+name/repo (the `fetch` tool's layout; default /work/.mirror).
# Without one, clone github.com/IST-DASLab/gptq, mit-han-lab/llm-awq and casper-hansen/AutoAWQ there first.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
mirror=${1:-/work/.mirror}
out=${2:-$here/.refs}
mkdir -p "$out"
get() { # repo-dir name commit paths...
    local git=$mirror/$1/repo name=$2 commit=$3
    shift 3
    [ -d "$git" ] || git=$mirror/$1
    [ -d "$git" ] || { echo "fetch_refs: no clone of $1 under $mirror" >&2; exit 1; }
    rm -rf "$out/$name"
    mkdir -p "$out/$name"
    local f
    for f in "$@"; do # file by file: a partial clone may lack unrelated blobs
        mkdir -p "$out/$name/$(dirname "$f")"
        git --git-dir="$git" show "$commit:$f" >"$out/$name/$f"
    done
    echo "$name $(git --git-dir="$git" rev-parse "$commit")" >>"$out/COMMITS.tmp"
}
rm -f "$out/COMMITS.tmp"
get IST-DASLab+gptq gptq 2d65066 gptq.py quant.py
get mit-han-lab+llm-awq llm-awq d6e797a awq/quantize/auto_scale.py awq/quantize/auto_clip.py awq/quantize/quantizer.py
get casper-hansen+AutoAWQ autoawq 88e4c76 awq/quantize/quantizer.py awq/quantize/scale.py awq/models/llama.py \
    awq/models/mistral.py awq/models/qwen2.py awq/models/qwen3.py
mv "$out/COMMITS.tmp" "$out/COMMITS"
cat "$out/COMMITS"
