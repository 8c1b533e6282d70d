# Sourced by the shell tests: where their data is.
#   D     the reference data (QCAL_DATA, default ../shared/data beside the clone): larger models and texts
#   E     the data shipped in the repository (examples/): stories260K and TinyStories text, always there
#   S260  the bundled stories260K; TINY / TINY_EVAL its disjoint calibration / evaluation texts
# need_data PATH...: exits 77 (CTest: skipped) naming the first missing path, so a skip always says why.
_qc_src=${QCAL_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
D=${QCAL_DATA:-$_qc_src/../shared/data}
E=$_qc_src/examples
S260=$E/stories260K
TINY=$E/text/tiny-calib.utf8
TINY_EVAL=$E/text/tiny-eval.utf8
need_data() {
    local p
    for p in "$@"; do
        if [[ ! -e $p ]]; then
            echo "SKIP: $p not found (the reference data: set QCAL_DATA to the shared/data directory)"
            exit 77
        fi
    done
}
