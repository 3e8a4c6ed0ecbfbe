#!/usr/bin/env bash
# Every check of the GPU path in one call of at most 8 minutes, each stage under its own timeout.
#
#   bash tests/gpu_check.sh              # on a CUDA machine; results under $OUT (or a temp folder it names)
#   bash tests/gpu_check.sh --dry-run    # on CPU: the same stages at toy size, the CUDA-only one skipped
#
# On the lent GPU machine (no package index): build the carried packages here first with
# `python tests/gpu_carry.py` (writes .carry/site.tar.gz), then run this with carry [".carry"].
# Stages: env (versions), codec (Encodec real-time factor on CUDA, codes vs CPU), train (train.py,
# --init scratch, 50 steps on the synthetic corpus through Unsloth where it loads), trained (the loss
# fell, the checkpoint reloads), infer (a 3-minute song: Expert cold and warm, four difficulties, and
# with --compile; prefill and decode timed apart), mfu (tests/bench_train.py's rows in the time left).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
WORK=$(mktemp -d)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 TOKENIZERS_PARALLELISM=false
if [ $DRY = 0 ] && [ -f .carry/site.tar.gz ]; then
    tar -xzf .carry/site.tar.gz -C "$WORK" && export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
START=$(date +%s)

stage() {  # stage NAME SECONDS COMMAND...: its output in $OUT/NAME.log, its status and time in summary.txt
    local name=$1 limit=$2 begin
    shift 2
    begin=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
    echo "$name: exit $? in $(($(date +%s) - begin)) s" | tee -a "$OUT/summary.txt"
}

if python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    DEVICE=cuda
elif [ $DRY = 1 ]; then
    DEVICE=cpu
else
    echo "gpu_check.sh: no CUDA device here; run with --dry-run to rehearse on CPU" >&2
    exit 2
fi
echo "device $DEVICE, dry run $DRY, results in $OUT" | tee "$OUT/summary.txt"

stage env 60 bash -c 'nvidia-smi 2>&1 | head -15; python -c "
import sys, torch, transformers, trl
print(sys.version.split()[0], \"torch\", torch.__version__, \"transformers\", transformers.__version__, \"trl\", trl.__version__)
print(\"cuda\", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else \"-\")
for name in (\"unsloth\", \"bitsandbytes\"):
    try:
        print(name, __import__(name).__version__)
    except Exception as e:
        print(name, \"not importable:\", type(e).__name__, str(e).splitlines()[0] if str(e) else \"\")
"'

if [ $DRY = 1 ]; then
    SIZE=(--tiny) SONGS=2 STEPS=3 SECONDS_=20 ACCUM=1
else
    SIZE=(--init scratch) SONGS=8 STEPS=50 SECONDS_=180 ACCUM=1
fi

stage codec 120 python tests/gpu_check.py codec --device $DEVICE --seconds $SECONDS_

python utils.py synth "$WORK/synth" --songs $SONGS >/dev/null
stage train 240 python train.py --data "$WORK/synth" "${SIZE[@]}" --codec-weights random --max-steps $STEPS \
    --grad-accum $ACCUM --learning-rate 3e-4 --warmup-steps 5 --save-steps $STEPS --val-share 0 \
    --output-dir "$WORK/model" --cache-dir "$WORK/cache" --logging-steps 1
stage trained 60 python tests/gpu_check.py trained "$WORK/model"

python tests/gpu_check.py song "$WORK/song" --seconds $SECONDS_ >/dev/null
map() {  # map NAME FLAGS...: infer.py on the song with the trained model, its output in $WORK/NAME.log
    local name=$1
    shift
    python infer.py "$WORK/song/song.ogg" --model "$WORK/model" --device $DEVICE --bpm 120 --offset 0 \
        --temperature 1 --lights none --output "$WORK/$name.zip" "$@" >"$WORK/$name.log" 2>&1
}
infer_all() {
    map expert_cold --difficulty Expert
    map expert_warm --difficulty Expert
    map four_difficulties --difficulty Normal Hard Expert ExpertPlus
    [ $DEVICE = cuda ] && map expert_compiled --difficulty Expert --compile
    python tests/gpu_check.py times "$WORK"/expert_*.log "$WORK"/four_difficulties.log
}
export -f map infer_all
export WORK DEVICE
stage infer 240 bash -c infer_all

LEFT=$((480 - ($(date +%s) - START)))
if [ $DEVICE = cuda ] && [ $LEFT -gt 60 ]; then
    stage mfu $LEFT python tests/bench_train.py --steps 5
else
    echo "mfu: skipped ($([ $DEVICE = cuda ] && echo "$LEFT s left" || echo "needs CUDA"))" | tee -a "$OUT/summary.txt"
fi
echo "total $(($(date +%s) - START)) s" | tee -a "$OUT/summary.txt"
rm -rf "$WORK"
