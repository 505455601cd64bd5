#!/usr/bin/env bash
# Data-parallel training on one machine: the default G2P recipe for STEPS steps as
#   1 process  x 2 workers (the default on 2 cores),
#   2 processes x 1 worker  (s2s train --nodes 2 on 127.0.0.1),
#   1 process  x 1 worker,
# each in its own run folder under target/distributed-bench/. Prints each run's training
# tokens/s and milliseconds per step in the all-reduce (the means of its logged windows after
# the first), its final validation loss, and the values all-reduced per step (the
# "collective" event of the two-process run).
#
#   scripts/distributed-bench.sh [STEPS]      (default 600)
#
# Needs CMUdict (the g2p task's data, as `cargo xtask train`). Run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS=${1:-600}
cargo build --release -q -p s2s-cli --features distributed
S=target/release/s2s
OUT=target/distributed-bench
rm -rf "$OUT"
mkdir -p "$OUT"
common=(train --config recipes/g2p.json --max-steps "$STEPS" --valid-every 1000000
    --keep-checkpoints 0 --average-last 0 --no-progress)

echo "1 process x 2 workers"
"$S" "${common[@]}" --workers 2 --out "$OUT/one-x2" >/dev/null 2>"$OUT/one-x2.log"

echo "2 processes x 1 worker"
port=$((20000 + RANDOM % 20000))
"$S" "${common[@]}" --workers 1 --out "$OUT/two" --nodes 2 --node-rank 0 \
    --coordinator "127.0.0.1:$port" >/dev/null 2>"$OUT/two-rank0.log" &
rank0=$!
"$S" "${common[@]}" --workers 1 --out "$OUT/two" --nodes 2 --node-rank 1 \
    --coordinator "127.0.0.1:$port" >/dev/null 2>"$OUT/two-rank1.log"
wait "$rank0"

echo "1 process x 1 worker"
"$S" "${common[@]}" --workers 1 --out "$OUT/one-x1" >/dev/null 2>"$OUT/one-x1.log"

python3 - "$OUT" <<'EOF'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print(f"| run | tokens/s | ms per step in the all-reduce | valid loss at the end |")
print(f"|---|---|---|---|")
for name, label in [("one-x2", "1 process x 2 workers"), ("two", "2 processes x 1 worker"),
                    ("one-x1", "1 process x 1 worker")]:
    events = [json.loads(l) for l in (out / name / "metrics.jsonl").read_text().splitlines()]
    rates = [e["tokens_per_second"] for e in events if e["event"] == "train"][1:]
    exchange = [e["exchange_ms"] for e in events if e["event"] == "train" and "exchange_ms" in e][1:]
    valid = [e["loss"] for e in events if e["event"] == "valid"]
    ms = f"{sum(exchange) / len(exchange):.1f}" if exchange else "-"
    print(f"| {label} | {sum(rates) / max(len(rates), 1):,.0f} | {ms} | {valid[-1]:.5f} |")
    for e in events:
        if e["event"] == "collective":
            print(f"  all-reduced per step: {e['values_per_step']:,} values "
                  f"({e['bytes_per_step'] / 1e6:.2f} MB), {e['peers']} peers")
EOF
