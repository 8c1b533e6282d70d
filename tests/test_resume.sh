#!/usr/bin/env bash
# Crash test: qcal-llama-25m quantizations killed with SIGKILL at random instants and at every phase
# (sampling, each layer's load/forward/solve/part/save, checkpoint assembly), then started again with the
# same command: each must resume and write a checkpoint byte-identical to the uninterrupted run's (every
# file but qcal_report.json, which holds timings). The same with SIGTERM (exit 143, state kept, message
# on how to resume). AWQ and an --eval run resume too, and a run whose parts become the shards (part shards).
# No temporary file or work directory may be left.
set -u
Q=${QCAL_BIN:?QCAL_BIN not set}
D=${QCAL_DATA:-../shared/data}
M=$D/qcal-llama-25m
if [[ ! -d "$M" ]]; then echo "SKIP: $M not found"; exit 77; fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
pass=0; fail=0
ok() { pass=$((pass+1)); }
bad() { fail=$((fail+1)); echo "FAIL: $*"; }
RANDOM=${QCAL_TEST_SEED:-7}

# same_as REF OUT: every file of the reference checkpoint, byte for byte (the report aside)
same_as() {
    local f n=0
    for f in "$1"/*; do
        [[ $(basename "$f") == qcal_report.json ]] && continue
        cmp -s "$f" "$2/$(basename "$f")" || { echo "differs: $(basename "$f")"; return 1; }
        n=$((n+1))
    done
    [[ $n -ge 5 && $(ls "$2" | wc -l) -eq $(ls "$1" | wc -l) ]]
}
clean_after() { # nothing of the run may be left beside the checkpoint
    local left; left=$(ls "$T" | grep -E '^out\.(tmp-|old-|qcal-work|qcal-lock)' || true)
    [[ -z "$left" ]] || { echo "left behind: $left"; return 1; }
}

run_case() { # run_case LABEL METHOD_ARGS... ; uses $KILL_ENV / $DELAY / $SIG
    local label=$1; shift
    rm -rf "$T/out"
    if [[ -n "${DELAY:-}" ]]; then
        "$Q" quantize "${common[@]}" "$@" --out "$T/out" >/dev/null 2>"$T/err1" &
        local pid=$!
        sleep "$DELAY"
        kill -"$SIG" $pid 2>/dev/null
        wait $pid 2>/dev/null; rc1=$?
    else
        env $KILL_ENV "$Q" quantize "${common[@]}" "$@" --out "$T/out" >/dev/null 2>"$T/err1"; rc1=$?
    fi
    if [[ $SIG == TERM || $SIG == 15 ]]; then
        # a stop request: exit 143, or 0 when it came too late to matter; never a half-written output
        if [[ $rc1 -eq 143 ]]; then
            if ls "$T" | grep -q '^out\.tmp-'; then bad "$label: temporary checkpoint left after SIGTERM"; fi
            if [[ -f "$T/out.qcal-work/x.bin" ]] && ! grep -q "run the same command again" "$T/err1"; then
                bad "$label: no resume hint after SIGTERM: $(tail -n 2 "$T/err1")"; fi
        elif [[ $rc1 -ne 0 ]]; then bad "$label: SIGTERM exit $rc1: $(tail -n 3 "$T/err1")"; fi
    fi
    local rc2=0
    if [[ $rc1 -eq 0 ]]; then : >"$T/err2" # it finished before the signal came: nothing to resume
    else "$Q" quantize "${common[@]}" "$@" --out "$T/out" >/dev/null 2>"$T/err2"; rc2=$?; fi
    local where; where=$(grep -o "resuming at layer [0-9]* of [0-9]*" "$T/err2" || echo "from the start")
    [[ $rc1 -eq 0 ]] && where="finished before the signal"
    if [[ $rc2 -ne 0 ]]; then bad "$label: rerun exit $rc2: $(tail -n 3 "$T/err2")"; return; fi
    if same_as "$REF" "$T/out" && clean_after; then ok; echo "ok   $label (first exit $rc1): $where"
    else bad "$label: checkpoint differs after resuming ($where)"; fi
}

common=(--model "$M" --calib "$D/text/c4.utf8" --nsamples 8 --seqlen 256 --quiet)
GPTQ=(--act-order)

# the uninterrupted reference
t0=$(date +%s.%N)
"$Q" quantize "${common[@]}" "${GPTQ[@]}" --out "$T/out" >/dev/null 2>"$T/err" || { cat "$T/err"; exit 1; }
dur=$(echo "$(date +%s.%N) - $t0" | bc)
mv "$T/out" "$T/ref"; REF=$T/ref
echo "reference run: ${dur} s"

# 1. SIGKILL at each phase (the test hook QCAL_TEST_KILL=NAME:N kills the process at the N-th NAME point);
#    cleanup / cleanup-stamp: after the checkpoint's rename, before and during the work directory's removal
#    (the rerun must see the checkpoint written by this recipe, finish the removal and exit 0)
SIG=9; DELAY=
for spec in "phase:sampling:1" "phase:embed:1" "phase:load:1" "phase:forward:1" "phase:solve:2" \
            "phase:part:1" "phase:save:1" "phase:load:4" "phase:forward:13" "phase:solve:20" "phase:part:6" \
            "phase:save:8" "phase:assembly:1" "tensor:1" "tensor:40" "tensor:90" "cleanup:1" "cleanup-stamp:1"; do
    KILL_ENV="QCAL_TEST_KILL=$spec" run_case "SIGKILL at $spec" "${GPTQ[@]}"
done
# 2. SIGKILL at random instants over the run
KILL_ENV=
for i in 1 2 3 4 5 6 7 8; do
    DELAY=$(echo "scale=2; $dur * $RANDOM / 32768" | bc)
    run_case "SIGKILL after ${DELAY} s" "${GPTQ[@]}"
done
# 3. SIGTERM at phases and at random instants
SIG=15; DELAY=
for spec in "phase:forward:3" "phase:save:2" "phase:assembly:1" "tensor:20"; do
    KILL_ENV="QCAL_TEST_KILL=$spec QCAL_TEST_SIGNAL=15" run_case "SIGTERM at $spec" "${GPTQ[@]}"
done
KILL_ENV=
for i in 1 2 3 4 5 6; do
    DELAY=$(echo "scale=2; $dur * $RANDOM / 32768" | bc)
    run_case "SIGTERM after ${DELAY} s" "${GPTQ[@]}"
done
DELAY=

# 4. AWQ resumes too (its next-layer input is the FP output)
AWQ=(--method awq --format awq)
rm -rf "$T/out"
"$Q" quantize "${common[@]}" "${AWQ[@]}" --out "$T/out" >/dev/null 2>"$T/err" || { cat "$T/err"; exit 1; }
rm -rf "$T/ref"; mv "$T/out" "$T/ref"
SIG=9
for spec in "phase:awq-search:3" "phase:part:5" "tensor:30"; do
    KILL_ENV="QCAL_TEST_KILL=$spec" run_case "AWQ SIGKILL at $spec" "${AWQ[@]}"
done

# 5. --eval after a resume: the earlier layers' fake-quantized weights come from the checkpoint; both
#    perplexities must still agree (qcal checks) and equal the uninterrupted run's
EV=(--eval "$D/text/wiki.utf8" --eval-seqlen 256 --eval-max-windows 4)
"$Q" quantize "${common[@]}" "${EV[@]}" --out "$T/e1" 2>/dev/null | tail -n 1 >"$T/p1"
QCAL_TEST_KILL="phase:save:6" "$Q" quantize "${common[@]}" "${EV[@]}" --out "$T/e2" >/dev/null 2>&1
"$Q" quantize "${common[@]}" "${EV[@]}" --out "$T/e2" 2>"$T/err" | tail -n 1 >"$T/p2"
grep -q "resuming at layer 5 of 8" "$T/err" && cmp -s "$T/p1" "$T/p2" && grep -q "^perplexity: " "$T/p2" \
    && ok || bad "eval after resume: $(cat "$T/p1") vs $(cat "$T/p2"); $(tail -n 2 "$T/err")"

# 6. a changed recipe does not resume silently: refused with the reason, --restart starts over
QCAL_TEST_KILL="phase:save:3" "$Q" quantize "${common[@]}" --out "$T/r" >/dev/null 2>&1
"$Q" quantize "${common[@]}" --bits 3 --out "$T/r" >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 1 ]] && grep -q "recipe_sha256" "$T/err" && grep -q -- "--restart" "$T/err" && [[ -f "$T/r.qcal-work/x.bin" ]] \
    && ok || bad "changed recipe: rc $rc $(cat "$T/err")"
"$Q" quantize "${common[@]}" --bits 3 --out "$T/r" --restart >/dev/null 2>"$T/err"; rc=$?
[[ $rc -eq 0 && -f "$T/r/model.safetensors" && ! -e "$T/r.qcal-work" ]] && ! grep -q "resuming" "$T/err" \
    && ok || bad "--restart: rc $rc $(cat "$T/err")"

# 7. part shards (formats/ckpt_write.h: --max-shard-size below the checkpoint, above every part, so the parts
#    become the shards by hard links): killed while a layer's part is written, at assembly and between two
#    links, the resumed run links the parts of both processes and gives the uninterrupted run's bytes
PS=(--act-order --max-shard-size 25)
rm -rf "$T/out" "$T/ref"
"$Q" quantize "${common[@]}" "${PS[@]}" --out "$T/out" >/dev/null 2>"$T/err" || { cat "$T/err"; exit 1; }
mv "$T/out" "$T/ref"; REF=$T/ref
[[ $(ls "$REF" | grep -c '^model-[0-9]*-of-00009\.safetensors$') -eq 9 ]] && ok || bad "part shards: $(ls "$REF")"
SIG=9; DELAY=
for spec in "phase:part:4" "phase:assembly:1" "tensor:3"; do
    KILL_ENV="QCAL_TEST_KILL=$spec" run_case "part shards: SIGKILL at $spec" "${PS[@]}"
done
"$Q" check "$T/out" >"$T/chk" 2>&1 && ok || { bad "part shards after resume: qcal check"; cat "$T/chk"; }

echo "$pass passed, $fail failed"
[[ $fail -eq 0 ]]
