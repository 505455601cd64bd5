#!/bin/bash
# Real-data checks of issue 34 on the default recipe (flex, 2 workers).
# Usage: scripts/check-training-runs.sh after `cargo xtask train` (which leaves runs/g2p).
# Trains the default recipe again (runs/g2p-repeat), stops one run with SIGINT after 20 s
# and resumes it (runs/g2p-resumed), and trains seeds 1 and 2; compares the logged losses.
set -u
cd "$(dirname "$0")/.."
S=target/release/s2s
losses() { python3 -c "
import json,sys
for l in open(sys.argv[1]):
    e=json.loads(l)
    if e['event'] in ('train','valid'): print(e['event'], e['step'], repr(e['loss']))
" $1/metrics.jsonl; }
echo "== repeat: same settings again"
$S train --config recipes/g2p.json --out runs/g2p-repeat --no-progress 2>&1 | grep -v "^task\|^vocab" | tail -3
if diff <(losses runs/g2p) <(losses runs/g2p-repeat) >/dev/null; then echo "REPEAT: metrics.jsonl losses identical ($(losses runs/g2p | wc -l) events)"; else echo "REPEAT: DIFFER"; diff <(losses runs/g2p) <(losses runs/g2p-repeat) | head; fi
cmp runs/g2p/last/model.safetensors runs/g2p-repeat/last/model.safetensors && echo "REPEAT: last/model.safetensors identical bytes"
echo "== SIGINT after 20 s, then --resume"
$S train --config recipes/g2p.json --out runs/g2p-resumed --no-progress > /tmp/int.out 2> /tmp/int.err &
PID=$!
sleep 20; kill -INT $PID; wait $PID; echo "exit status $?"; tail -1 /tmp/int.err
$S train --resume runs/g2p-resumed --no-progress 2>&1 | tail -3
if diff <(losses runs/g2p) <(losses runs/g2p-resumed) >/dev/null; then echo "RESUMED: metrics.jsonl losses identical"; else echo "RESUMED: DIFFER"; diff <(losses runs/g2p) <(losses runs/g2p-resumed) | head; fi
cmp runs/g2p/last/model.safetensors runs/g2p-resumed/last/model.safetensors && echo "RESUMED: last/model.safetensors identical bytes"
for seed in 1 2; do
  echo "== seed $seed"
  $S train --config recipes/g2p.json --seed $seed --out runs/g2p-seed$seed --no-progress 2>&1 | tail -2
  $S eval --model runs/g2p-seed$seed --split test | grep "WER\|PER"
done
