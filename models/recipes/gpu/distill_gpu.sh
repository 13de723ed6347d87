#!/usr/bin/env bash
# On-policy distillation of the bundled drafters on one GPU (models.recipes.target_samples): sample from the
# bundled image target (guidance 3, T = 1) and text target (greedy and T = 1 from corpus prompts), then
# distil drafters on those samples towards the same (guided) target. Image: two drafter shapes in
# parallel; text: the bundled drafter shape. Everything runs at once on one GPU.
#   OUT=DIR bash models/recipes/gpu/distill_gpu.sh                          (an H100: about 10 minutes)
# Measured on one H100: image samples 2.8 min then 3.9 min of drafter training; text samples 5.3 min
# then 3.9 min of training (the bundled run was cut at 9 minutes and finished with --resume).
#   DEVICE=cpu DRY=1 OUT=/tmp/dry bash models/recipes/gpu/distill_gpu.sh    (a dry run of the pipeline)
# Inputs: the bundled checkpoints and runs/text/tokens (python -m models.text_tokens); 1M tokens of
# its train.bin (64 even chunks) go with the samples, which are the bulk (16.8M tokens). Outputs: logs and the exports tarred
# into OUT/models.tar.* (15 MB parts).
set -uo pipefail
source "$(dirname "$0")/gpu_jobs.sh"
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu-distill}
PY=${PY:-python3}
MINUTES=${MINUTES:-4}
TEXT_TOKENS=${TEXT_TOKENS:-runs/text/tokens}
if [ -n "${DRY:-}" ]; then
  NUM_IMAGE=64; NUM_TEXT=8; NEW_TEXT=16; BATCH=32; PRESET_I=smoke; PRESET_T=cpu; STEPS="--max-steps 3"; MINUTES=0.5
else
  NUM_IMAGE=262144; NUM_TEXT=65536; NEW_TEXT=192; BATCH=4096; PRESET_I=gpu; PRESET_T=gpu; STEPS="--max-steps 100000"
fi
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
CK=models/checkpoints
(
  $PY -m models.recipes.target_samples --target $CK/image-target --out runs/image/onpolicy --num $NUM_IMAGE \
    --guidance 3 --temperature 1 --batch-size $BATCH --device "$DEVICE" || exit 1
  for shape in 320,1,5,864 256,1,4,704; do
    d=runs/image/distill-${shape//,/x}
    rm -rf "$d" && mkdir -p "$d" && cp -r $CK/image-target "$d/target"
    $PY -m models.recipes.train image --preset $PRESET_I --which draft --data runs/image/onpolicy --out "$d" \
      --draft-shape $shape --distill-guidance 3 --max-minutes "$MINUTES" $STEPS --device "$DEVICE" &
  done
  wait
) > "$OUT/image.log" 2>&1 &
image_pid=$!
(
  $PY -m models.recipes.target_samples --target $CK/text-target --text "$TEXT_TOKENS" --out runs/text/onpolicy \
    --num $NUM_TEXT --new-tokens $NEW_TEXT --corpus-tokens 1048576 --batch-size $((BATCH / 2)) --device "$DEVICE" || exit 1
  rm -rf runs/text/distill && mkdir -p runs/text/distill && cp -r $CK/text-target runs/text/distill/target
  $PY -m models.recipes.train text --preset $PRESET_T --which draft --data runs/text/onpolicy --out runs/text/distill \
    --tokenizer $CK/text-target --max-minutes "$MINUTES" $STEPS --device "$DEVICE"
) > "$OUT/text.log" 2>&1 &
text_pid=$!
wait_job "$OUT" image $image_pid; image_rc=$?
wait_job "$OUT" text $text_pid; text_rc=$?
pack_outputs "$OUT" runs/image/onpolicy/meta.json runs/image/distill-*/draft runs/image/distill-*/draft.log.jsonl \
  runs/text/onpolicy/samples.json runs/text/distill/draft runs/text/distill/draft.log.jsonl
[ $image_rc -eq 0 ] && [ $text_rc -eq 0 ]
