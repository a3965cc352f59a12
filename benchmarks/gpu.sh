#!/usr/bin/env bash
# One prepared run on a single-GPU machine without internet (H100 class),
# under 10 minutes.  Run from the repository root, with the wheels of
# benchmarks/fetch_gpu_wheels.sh in .whl/:
#   OUT=/some/folder bash benchmarks/gpu.sh
# Writes JSON (and the logs) to $OUT:
#   speed_cuda.json  paper setting MiT-B1, batch 10, 224 px, AMP (bf16):
#                    training images/s and peak memory, LPD vs SegformerHead;
#                    inference images/s, single pass vs TTA x6; torch CRF
#   scale_cuda.json  tiled inference up to 4096 px, dataset scan
#   dist.json        a short torchrun --launcher pytorch training run
set -uo pipefail
OUT=${OUT:-benchmarks/results/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1
python3 -c 'import lpd_mmseg, mmseg, torch; print("lpd_mmseg", lpd_mmseg.__version__, "mmseg", mmseg.__version__, "torch", torch.__version__, torch.cuda.get_device_name(0))' | tee "$OUT/versions.txt"

timeout 300 python3 benchmarks/speed.py --device cuda --batch-size 10 --amp \
    --rounds 5 --steps 10 --infer-images 40 --bank-images 400 \
    --out "$OUT/speed_cuda.json" 2>&1 | tail -n 40 > "$OUT/speed.log"

timeout 150 python3 benchmarks/scale.py --device cuda --sizes 1024 4096 \
    --out "$OUT/scale_cuda.json" 2>&1 | tail -n 40 > "$OUT/scale.log"

# The distributed path: torchrun + --launcher pytorch on the GPU.
DATA=/tmp/lpd_dist_data
python3 tools/make_synthetic_bcss.py --out "$DATA" --num-train 40 \
    --num-val 8 --num-test 8 --size 64 --no-progress > /dev/null
start=$(date +%s)
timeout 120 python3 -m torch.distributed.run --nproc_per_node=1 \
    --master_port=29533 tools/train.py tests/configs/lpd_tiny.py \
    --launcher pytorch --work-dir /tmp/lpd_dist --cfg-options \
    train_dataloader.dataset.data_root=$DATA \
    val_dataloader.dataset.data_root=$DATA \
    test_dataloader.dataset.data_root=$DATA > "$OUT/dist.log" 2>&1
rc=$?
python3 - "$rc" "$start" "$OUT" <<'PY'
import json, os, sys, time
rc, start, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
log = open(os.path.join(out, 'dist.log')).read()
json.dump(dict(exit_code=rc, seconds=int(time.time()) - start,
               checkpoint=os.path.isfile('/tmp/lpd_dist/iter_4.pth'),
               distributed='Distributed launcher: pytorch' in log or
               "launcher = 'pytorch'" in log),
          open(os.path.join(out, 'dist.json'), 'w'), indent=2)
PY
ls -la "$OUT"
