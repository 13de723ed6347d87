#!/usr/bin/env bash
# Train the 64x64 image pair (16x16 codes) on one GPU: the larger run that image64-target and
# image64-draft were trained without (they are CPU runs). Data at 64x64 -> tokens from the bundled
# VQ (its convolutions take 64x64 and give 16x16) -> target -> drafter distilled towards the guided
# target (scale 3; it then drafts unguided).
#   PRESET=gpu64 OUT=DIR bash models/recipes/gpu/image64_gpu.sh              (an H100: about 9 minutes)
#   PRESET=smoke DEVICE=cpu OUT=/tmp/dry bash models/recipes/gpu/image64_gpu.sh   (a dry run of the pipeline)
# Needs the emoji font for the data (apt-get install fonts-noto-color-emoji unicode-data) unless
# runs/image64/data.npz exists. Outputs: logs and the exports tarred into OUT/models.tar.* (15 MB parts).
set -uo pipefail
source "$(dirname "$0")/gpu_jobs.sh"
PRESET=${PRESET:-gpu64}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu-out-image64}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
IMG=runs/image64
(
  { [ -f $IMG/data.npz ] || $PY -m models.recipes.image.data --size 64 --out $IMG; } &&
  { [ -f $IMG/ar/meta.json ] || $PY -m models.recipes.image.tokens --data $IMG/data.npz --vq models/checkpoints/image-vq \
      --out $IMG/ar --device "$DEVICE"; } &&
  $PY -m models.recipes.train image --preset "$PRESET" --data $IMG/ar --out $IMG/train-$PRESET --device "$DEVICE" \
    --max-minutes ${IMAGE_MINUTES:-8} --distill-guidance 3
) > "$OUT/image64.log" 2>&1 &
wait_job "$OUT" image64 $!; rc=$?
pack_outputs "$OUT" $IMG/ar/meta.json $IMG/train-$PRESET/target $IMG/train-$PRESET/draft \
  $IMG/train-$PRESET/target.log.jsonl $IMG/train-$PRESET/draft.log.jsonl
exit $rc
