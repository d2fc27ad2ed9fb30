#!/usr/bin/env bash
# The CUDA path on a lent GPU machine, in one call (issue 16): the GPU tests, then the speed of
# the paper / default recipes and of the fashion-mnist-6 benchmark DDNN on the GPU, and a profile
# of one CUDA step. Every part has its own time limit, so one that hangs costs only its share.
#
# Run from the repository root on the GPU machine, with the fashion-mnist files carried in
# .gpu/fashion-mnist (cp -r /usr/share/datasets/fashion-mnist .gpu/) and OUT set to a folder for
# the logs:  OUT=/tmp/out bash benchmarks/gpu_check.sh [PART ...]   (default: every part)
# Python packages the machine lacks (orjson, for the CLI test) travel as wheels in .whl.
set -u
export PYTHONPATH="$PWD/src:$PWD/benchmarks" PYTHONUNBUFFERED=1
out=${OUT:?set OUT to a folder for the logs}
if [ -d .gpu/fashion-mnist ] && [ ! -d /usr/share/datasets/fashion-mnist ]; then
    mkdir -p /usr/share/datasets && cp -r .gpu/fashion-mnist /usr/share/datasets/
fi

if compgen -G '.whl/*.whl' >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl &&
        export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
wanted=" $* "

part() {  # part NAME SECONDS COMMAND...: run, log to $out/NAME.txt, report its exit status
    local name=$1 limit=$2
    shift 2
    if [ "$wanted" != "  " ] && [[ "$wanted" != *" $name "* ]]; then return; fi
    local t0=$SECONDS
    echo "=== $name: $*"
    timeout "$limit" "$@" >"$out/$name.txt" 2>&1
    local rc=$?
    tail -n 25 "$out/$name.txt"
    echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}

nvidia-smi -L
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
part tests 50 python3 -m pytest -q -p no:cacheprovider tests/train/test_gpu.py
part fashion_cuda32 150 python3 benchmarks/fashion_benchmark.py --skip-baselines --threads 8 \
    --out "$out/fashion_cuda32_results.txt" train.accelerator=cuda
part train_speed_cuda 75 python3 benchmarks/train_speed.py --repeats 2 --accelerator cuda
part profile_cuda32 45 python3 benchmarks/gpu_step_profile.py
part fashion_cuda_bf16 140 python3 benchmarks/fashion_benchmark.py --skip-baselines --threads 8 \
    --out "$out/fashion_cuda_bf16_results.txt" train.accelerator=cuda train.precision=bf16
