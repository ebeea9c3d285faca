#!/bin/bash
# Fresh-process searches interleaved: rclip, FrozenLens "before" and "after" (lite and openclip:), on the
# 1024x768 indexes that the last `bench/bench_cold.py` runs left in .cache/bench-cold (run it for both sides first).
#   [PYTHON=.venv/bin/python] bench/cold_search_interleaved.sh [BEFORE_SRC] [ROUNDS]   (BEFORE_SRC default /tmp/wt-before/src)
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
W=$REPO/.cache/bench-cold
BEFORE=${1:-/tmp/wt-before/src}
ROUNDS=${2:-2}
Q="a dog on the beach"
export HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE
run() { label=$1; shift; /usr/bin/time -f "$label %e s %M KB" -o "$W/interleave.time" unshare --net "$@" > /dev/null; cat "$W/interleave.time"; }
for _ in $(seq "$ROUNDS"); do
  (cd "$W/photos-1024x768-200-v1" && RCLIP_DATADIR=$W/run-rclip-1024x768 run rclip "$W/rclip-venv/bin/rclip" -n -f -t 5 "$Q")
  for side in before after; do
    if [ $side = before ]; then SRC=$BEFORE; else SRC=$REPO/src; fi
    # the cache directory bench_cold.py gave this source tree
    C=$W/fl-cache-$(python3 -c "import hashlib,sys; print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:12])" "$SRC")
    for enc in lite openclip; do
      PYTHONPATH=$SRC FROZENLENS_CACHE=$C run "$side-$enc" "${PYTHON:-$REPO/.venv/bin/python}" -m frozenlens search "$Q" \
        --index "$W/run-fl-$enc-1024x768" -k 5
    done
  done
done
