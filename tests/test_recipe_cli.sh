#!/usr/bin/env bash
# `qcal recipe`: the example loads back to the defaults, errors carry file:line:col (exit 1), usage
# errors exit 2, flags override the file, relative paths follow the file, the hash is the SHA-256 of
# the printed hash text, and the resolved YAML loads back to the same hash. Needs no data.
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
T=$(cd "$T" && pwd -P)   # the physical path, as the recipe resolves it
pass=0; fail=0

expect() { # expect STATUS DESCRIPTION -- command...
    local want=$1 desc=$2; shift 3
    "$@" >"$T/out" 2>"$T/err"; local rc=$?
    if [[ $rc -eq $want ]]; then pass=$((pass+1)); else
        fail=$((fail+1)); echo "FAIL: $desc: exit $rc, expected $want"; sed 's/^/  stderr: /' "$T/err" | head -5; fi
}
expect_err() { # stderr of the last command contains NEEDLE
    if grep -qF -- "$1" "$T/err"; then pass=$((pass+1)); else
        fail=$((fail+1)); echo "FAIL: stderr lacks '$1':"; sed 's/^/  /' "$T/err" | head -5; fi
}
expect_out() { # stdout of the last command contains NEEDLE
    if grep -qF -- "$1" "$T/out"; then pass=$((pass+1)); else
        fail=$((fail+1)); echo "FAIL: stdout lacks '$1':"; sed 's/^/  /' "$T/out" | head -5; fi
}
check() { # check DESCRIPTION CONDITION...
    local desc=$1; shift
    if "$@"; then pass=$((pass+1)); else fail=$((fail+1)); echo "FAIL: $desc"; fi
}
hash_of_last() { tail -n 1 "$T/out" | sed -n 's/^recipe-sha256: \([0-9a-f]\{64\}\)$/\1/p'; }

expect 0 "qcal --help" -- "$Q" --help
expect_out "recipe"
expect 0 "recipe --help" -- "$Q" recipe --help
expect_out "--example"

# the example: exit 0, every key, loads back to exactly the defaults
expect 0 "recipe --example" -- "$Q" recipe --example
cp "$T/out" "$T/example.yaml"
for k in model out method bits group_size sym act_order static_groups true_sequential damp calib sampling \
         nsamples seqlen seed format device eval awq_scale awq_clip awq_search_samples; do
    grep -qE "^(# )?$k:" "$T/example.yaml" && pass=$((pass+1)) || { fail=$((fail+1)); echo "FAIL: example lacks $k"; }
done
: >"$T/empty.yaml"
expect 0 "recipe example.yaml --json" -- "$Q" recipe "$T/example.yaml" --json
cp "$T/out" "$T/example.json"
h_example=$(hash_of_last)
expect 0 "recipe empty.yaml --json" -- "$Q" recipe "$T/empty.yaml" --json
check "the example equals the defaults" cmp -s "$T/out" "$T/example.json"
check "hash line" test -n "$h_example"
check "canonical JSON line" grep -q '^{"act_order":false,"awq_clip":true,"awq_scale":"best","awq_search_samples":12,"bits":4,.*"true_sequential":true}$' "$T/example.json"

# the hash is SHA-256 of the hash text, which leaves out out/device/eval
expect 0 "recipe --hash-text" -- "$Q" recipe "$T/example.yaml" --hash-text
check "hash = sha256(hash text)" test "$(head -n 1 "$T/out" | tr -d '\n' | sha256sum | cut -c1-64)" = "$h_example"
check "hash text has no out/device/eval" bash -c "! head -n 1 '$T/out' | grep -qE '\"(out|device|eval)\"'"
expect 0 "out/device/eval do not change the hash" -- "$Q" recipe "$T/example.yaml" --out o --device cuda:1 --eval e.txt
check "same hash" test "$(hash_of_last)" = "$h_example"

# flags override the file; the resolved YAML loads back to the same hash
printf 'bits: 4\nmethod: gptq\ngroup_size: 64\n' >"$T/r.yaml"
expect 0 "recipe r.yaml --bits 3 --asym" -- "$Q" recipe "$T/r.yaml" --bits 3 --asym --json
expect_out '"bits":3'
expect_out '"format":"gptq_v2"'
expect_out '"group_size":64'
h_r=$(hash_of_last)
check "a real change changes the hash" test "$h_r" != "$h_example"
expect 0 "resolved YAML" -- "$Q" recipe "$T/r.yaml" --bits 3 --asym
head -n -1 "$T/out" >"$T/resolved.yaml"
expect 0 "resolved YAML loads back" -- "$Q" recipe "$T/resolved.yaml"
check "resolved YAML keeps the hash" test "$(hash_of_last)" = "$h_r"
printf '# comment\ngroup_size: 64   # reordered\nmethod: "gptq"\n' >"$T/r2.yaml"
expect 0 "reordered, commented, quoted" -- "$Q" recipe "$T/r2.yaml" --bits 3 --asym
check "formatting does not change the hash" test "$(hash_of_last)" = "$h_r"

# relative paths: in the file, relative to the file; in flags, relative to the current directory
mkdir -p "$T/sub"
printf 'model: m\ncalib: [data/c.jsonl, hf://datasets/a/b/c.json]\n' >"$T/sub/rel.yaml"
(cd "$T" && "$Q" recipe sub/rel.yaml --json --out o) >"$T/out" 2>"$T/err"
check "relative paths exit 0" test $? -eq 0
expect_out "\"model\":\"$T/sub/m\""
expect_out "\"path\":\"$T/sub/data/c.jsonl\""
expect_out '"path":"hf://datasets/a/b/c.json"'
expect_out "\"out\":\"$T/o\""

# errors in the file: exit 1, file:line:col and what is allowed
printf 'bits: 4\nmethod: gptq\nbitz: 3\n' >"$T/bad.yaml"
expect 1 "unknown key" -- "$Q" recipe "$T/bad.yaml"
expect_err "$T/bad.yaml:3:1: unknown key 'bitz' (did you mean 'bits'?); allowed: model, out, method"
printf 'method: gptx\n' >"$T/bad2.yaml"
expect 1 "bad enum" -- "$Q" recipe "$T/bad2.yaml"
expect_err "bad2.yaml:1:9: method: 'gptx' is not one of: gptq, awq, rtn"
printf 'calib:\n  - path: a\n    weight: -1\n' >"$T/bad3.yaml"
expect 1 "out of range" -- "$Q" recipe "$T/bad3.yaml"
expect_err "bad3.yaml:3:13: calib[0].weight: '-1' is not a finite number > 0"
printf 'bits: [4\n' >"$T/bad4.yaml"
expect 1 "malformed YAML" -- "$Q" recipe "$T/bad4.yaml"
expect_err "bad4.yaml:2:1: malformed YAML"
printf 'format: gptq\nsym: false\n' >"$T/bad5.yaml"
expect 1 "format/sym conflict" -- "$Q" recipe "$T/bad5.yaml"
expect_err "bad5.yaml:1:9: format 'gptq' (GPTQ v1) stores symmetric results only, but sym is false (${T}/bad5.yaml:2:6)"
expect 1 "conflict from flags" -- "$Q" recipe "$T/empty.yaml" --format awq --bits 3
expect_err "format 'awq' stores 4-bit results only, but bits is 3 (--bits)"
expect 1 "missing file" -- "$Q" recipe "$T/nope.yaml"
expect_err "$T/nope.yaml"

# usage errors: exit 2
expect 2 "no FILE" -- "$Q" recipe
expect_err "a recipe FILE is required"
expect 2 "two FILEs" -- "$Q" recipe "$T/r.yaml" "$T/r2.yaml"
expect 2 "unknown option" -- "$Q" recipe "$T/r.yaml" --bogus 1
expect_err "unknown option '--bogus'"
expect 2 "--example with FILE" -- "$Q" recipe --example "$T/r.yaml"
expect 2 "--example with an option" -- "$Q" recipe --example --bits 3
expect 2 "--sym --asym" -- "$Q" recipe "$T/r.yaml" --sym --asym
expect_err "--sym and --asym exclude each other"
expect 2 "bad flag value" -- "$Q" recipe "$T/r.yaml" --bits five
expect_err "--bits: expected an integer, got 'five'"
expect 2 "out-of-range flag" -- "$Q" recipe "$T/r.yaml" --group-size 12
expect_err "--group-size: 12 is not -1"
expect 2 "--json --hash-text" -- "$Q" recipe "$T/r.yaml" --json --hash-text
expect 2 "--bits without a value" -- "$Q" recipe "$T/r.yaml" --bits

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
