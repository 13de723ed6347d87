#!/usr/bin/env bash
# Train the bundled image and speech models on one GPU: the run behind models/checkpoints/image-*
# and speech-* (image: VQ tokenizer -> token sequences -> target + distilled drafter; speech:
# target + distilled drafter on runs/speech/ar, in parallel on the same GPU). The image drafter is
# distilled towards the target under classifier-free guidance (scale 3) and drafts unguided.
#   PRESET=gpu OUT=DIR bash models/recipes/gpu/train_gpu.sh             (an H100: about 8 minutes)
#   PRESET=smoke DEVICE=cpu OUT=/tmp/dry bash models/recipes/gpu/train_gpu.sh   (a dry run of the pipeline)
# Inputs: runs/image/data.npz (python -m models.recipes.image.data) and runs/speech/ar (python -m
# models.recipes.speech.tokens). Outputs: logs and the exports tarred into OUT/models.tar.* (15 MB parts).
set -uo pipefail
source "$(dirname "$0")/gpu_jobs.sh"
PRESET=${PRESET:-gpu}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-runs/gpu-out}
PY=${PY:-python3}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT"
IMG=runs/image
SPK=runs/speech
(
  $PY -m models.recipes.image.vq --preset "$PRESET" --out $IMG/vq-$PRESET --device "$DEVICE" --max-minutes ${VQ_MINUTES:-2} &&
  $PY -m models.recipes.image.tokens --vq $IMG/vq-$PRESET/export --out $IMG/ar-$PRESET --device "$DEVICE" &&
  $PY -m models.recipes.train image --preset "$PRESET" --data $IMG/ar-$PRESET --out $IMG/train-$PRESET --device "$DEVICE" \
    --max-minutes ${IMAGE_MINUTES:-4.5} --distill-guidance 3
) > "$OUT/image.log" 2>&1 &
image_pid=$!
$PY -m models.recipes.train speech --preset "$PRESET" --data $SPK/ar --out $SPK/train-$PRESET --device "$DEVICE" \
  --max-minutes ${SPEECH_MINUTES:-4.5} \
  > "$OUT/speech.log" 2>&1 &
speech_pid=$!
wait_job "$OUT" image $image_pid; image_rc=$?
wait_job "$OUT" speech $speech_pid; speech_rc=$?
pack_outputs "$OUT" $IMG/vq-$PRESET/export $IMG/vq-$PRESET/log.jsonl $IMG/ar-$PRESET/meta.json \
  $IMG/train-$PRESET/target $IMG/train-$PRESET/draft $IMG/train-$PRESET/target.log.jsonl \
  $IMG/train-$PRESET/draft.log.jsonl $SPK/train-$PRESET/target $SPK/train-$PRESET/draft \
  $SPK/train-$PRESET/target.log.jsonl $SPK/train-$PRESET/draft.log.jsonl
[ $image_rc -eq 0 ] && [ $speech_rc -eq 0 ]
