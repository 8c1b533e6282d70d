# plan_probe: the preflight plan of a quantize run (calib/plan.h) without running it, for
# benchmarks/bench_plan.sh (plan_probe --model DIR --out DIR [qcal quantize flags]).
add_executable(plan_probe plan_probe.c)
target_link_libraries(plan_probe PRIVATE qcal_core)
