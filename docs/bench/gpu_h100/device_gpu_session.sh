#!/bin/bash
# Run on a lent GPU machine: the GPU check plus extra creative-bench figures; raw outputs to $OUT.
# Usage (repository root): COMMIT=<commit> bash docs/bench/gpu_h100/device_gpu_session.sh
OUT=${OUT:-gpu_session_out}; mkdir -p "$OUT"
G=/tmp/g; mkdir -p $G
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit 3
export PYTHONUNBUFFERED=1
{ echo "commit ${COMMIT:-unknown}"; nvidia-smi; python3 -c "import torch,soundfile,sys;print(sys.version);print('torch',torch.__version__,'cuda',torch.version.cuda,torch.cuda.get_device_name(0))"; nproc; } > $G/machine.txt 2>&1
cat $G/machine.txt
python3 -c "from songweave.runtime.precision import choose_precision as c; print(c('auto','cuda')); print(c('auto','cpu'))" > $G/precision_auto.txt 2>&1; cat $G/precision_auto.txt
timeout 330 creative-gpu-check --out $G/check --timeout_s 150; echo "gpu_check exit $?" | tee -a $G/check_exit.txt
b() { name=$1; shift; timeout 100 creative-bench --device cuda --json $G/bench_$name.json "$@" > $G/bench_$name.txt 2>&1; echo "bench $name exit $?"; tail -n 12 $G/bench_$name.txt | cut -c1-300; }
b fp32 --precision fp32
b bf16 --precision bf16 --val_loss_steps 100
b bf16_large_compile --precision bf16 --compile --batch_size 32 --seq_frames 1200
tar czf $OUT/gpu_session.tar.gz -C $G .
cp $G/check/summary.txt $OUT/ 2>/dev/null; true
