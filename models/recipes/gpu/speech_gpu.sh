#!/usr/bin/env bash
# Train the bundled speech target and drafters on one GPU (the run behind models/checkpoints/
# speech-target and speech-draft): the target (preset gpu, 384x8), then two drafters distilled from
# it in parallel on the same GPU, the preset's 128x1 and a wider 192x1 for comparison.
#   OUT=DIR bash models/recipes/gpu/speech_gpu.sh                              (an H100: about 8 minutes)
#   PRESET=smoke DEVICE=cpu OUT=/tmp/dry bash models/recipes/gpu/speech_gpu.sh   (a dry run of the pipeline)
# Input: DATA (default runs/speech2/ar, built by python -m models.recipes.speech.tokens). Outputs: logs and
# the exports tarred into OUT/models.tar.* (15 MB parts).
set -uo pipefail
source "$(dirname "$0")/gpu_jobs.sh"
PRESET=${PRESET:-gpu}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu-out}
DATA=${DATA:-runs/speech2/ar}
RUN=${RUN:-runs/speech2/train-$PRESET}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
train() {  # train NAME ARGS...: one models.recipes.train speech command, logged to OUT/NAME.log
  local name=$1
  shift
  $PY -m models.recipes.train speech --preset "$PRESET" --data "$DATA" --device "$DEVICE" "$@" > "$OUT/$name.log" 2>&1
}
train target --which target --out "$RUN" --max-minutes "${TARGET_MINUTES:-5.5}" &
wait_job "$OUT" target $! || { pack_outputs "$OUT" "$RUN/target.log.jsonl"; exit 1; }
mkdir -p "$RUN-wide" && cp -r "$RUN/target" "$RUN-wide/"
train draft --which draft --out "$RUN" --max-minutes "${DRAFT_MINUTES:-1.5}" &
draft_pid=$!
train draft-wide --which draft --out "$RUN-wide" --draft-shape 192,1,3,512 --max-minutes "${DRAFT_MINUTES:-1.5}" &
wide_pid=$!
wait_job "$OUT" draft $draft_pid; draft_rc=$?
wait_job "$OUT" draft-wide $wide_pid; wide_rc=$?
pack_outputs "$OUT" "$RUN/target" "$RUN/draft" "$RUN-wide/draft" "$RUN/target.log.jsonl" \
  "$RUN/draft.log.jsonl" "$RUN-wide/draft.log.jsonl"
[ $draft_rc -eq 0 ] && [ $wide_rc -eq 0 ]
