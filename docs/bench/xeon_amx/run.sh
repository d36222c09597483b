#!/bin/bash
# The CPU figures of the guide's performance section, one after another on an idle machine.
# Run from the repository root: bash docs/bench/xeon_amx/run.sh
cd "$(dirname "$0")/../../.." || exit 1
out=docs/bench/xeon_amx
log=$out/log.txt
lscpu | grep -E "Model name|^CPU\(s\)|Flags" | sed 's/Flags:.*\(amx_bf16\|avx512_bf16\).*/Flags: (has amx_bf16 \/ avx512_bf16)/' > $out/machine.txt
python -c "import torch; print('torch', torch.__version__)" >> $out/machine.txt
: > $log
run() {
    name=$1; shift
    echo "== $name: $* | start $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)" >> $log
    "$@" > $out/$name.txt 2>&1
    echo "   rc=$? end $(date +%T)" >> $log
}
run fp32_default creative-bench --precision fp32 --json $out/fp32_default.json
run fp32_compile creative-bench --precision fp32 --compile --json $out/fp32_compile.json
run bf16_default creative-bench --precision bf16 --json $out/bf16_default.json
run bf16_compile creative-bench --precision bf16 --compile --json $out/bf16_compile.json
run auto_default creative-bench --json $out/auto_default.json
run fp32_profile creative-bench --precision fp32 --profile 1 --steps 3 --json $out/fp32_profile.json
run bf16_profile creative-bench --precision bf16 --profile 1 --steps 3 --json $out/bf16_profile.json
run gemm_ratio python $out/gemm_ratio.py
run bf16_val_loss creative-bench --precision bf16 --val_loss_steps 30 --seq_frames 128 --num_layers 2 --dim_feedforward 512 --agent_hidden_dim 64 --steps 3 --warmup 1 --json $out/bf16_val_loss.json
run arrange_speed creative-bench-arrange --json $out/arrange_speed.json
run fp32_1thread creative-bench --precision fp32 --threads 1 --json $out/fp32_1thread.json
echo "ALL DONE" >> $log
