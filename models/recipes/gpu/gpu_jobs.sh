# Helpers shared by the GPU recipes (train_gpu.sh, distill_gpu.sh); source this file.

# wait_job OUT NAME PID: wait for a background job, print its rc and the end of OUT/NAME.log
# (progress-bar lines dropped); returns the job's rc.
wait_job() {
  local rc
  wait "$3"; rc=$?
  echo "$2 rc=$rc"
  grep -v "it/s\]" "$1/$2.log" | tail -n 14
  return $rc
}

# pack_outputs OUT PATH...: tar the PATHs that exist into OUT/models.tar.* (15 MB parts).
pack_outputs() {
  local out=$1 paths=() p
  shift
  for p in "$@"; do
    [ -e "$p" ] && paths+=("$p")
  done
  tar -cf - "${paths[@]}" | split -b 15M - "$out/models.tar."
  ls -la "$out"
}
