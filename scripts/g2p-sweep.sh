#!/bin/bash
# Recipe measurements of issue 35 (docs/accuracy.md): trains scripts/g2p-sweep-base.json (the
# default recipe before issue 35, the base of every sweep row) with the given overrides into
# runs/sweep/NAME (flex, the machine's default workers; the time limit lifted, so that a
# loaded machine changes the time and not the result), then evaluates the
# best model on the CMUdict test split, greedy and beam 5, and appends one row to
# runs/sweep/results.tsv: name, overrides, steps, training seconds, test WER/PER greedy,
# test WER/PER beam 5.
# Usage: scripts/g2p-sweep.sh NAME [s2s train options...]
#   e.g. scripts/g2p-sweep.sh drop03 --max-steps 24000 --dropout 0.3
set -eu
cd "$(dirname "$0")/.."
S=target/release/s2s
name=$1; shift
out=runs/sweep/$name
mkdir -p runs/sweep
over=()
[ -e "$out/config.json" ] && over=(--overwrite)
$S train --config scripts/g2p-sweep-base.json --out "$out" "${over[@]}" --no-progress --time-limit 7200 "$@" > "$out.log" 2>&1
read -r steps secs < <(python3 - "$out/metrics.jsonl" <<'PY'
import json, sys
steps, secs = 0, 0.0
for line in open(sys.argv[1]):
    e = json.loads(line)
    if e["event"] in ("train", "valid"):
        steps, secs = e["step"], e["elapsed_seconds"]
print(steps, round(secs))
PY
)
metric() { $S eval --model "$out" --split test --json "$@" | python3 -c "
import json, sys
e = json.load(sys.stdin)['scores']
print('%.2f\t%.2f' % (100 * e['wer'], 100 * e['ter']))"; }
greedy=$(metric)
beam=$(metric --strategy beam --beam-size 5)
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$*" "$steps" "$secs" "$greedy" "$beam" | tee -a runs/sweep/results.tsv
