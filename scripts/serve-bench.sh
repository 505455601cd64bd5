#!/usr/bin/env bash
# The serving benchmark (issue 38, docs/serving.md): `s2s serve` under 1, 16 and 64 concurrent
# clients, each sending one-word requests back to back on a kept-alive connection
# (benches/examples/serve_load.rs), against offline batched `s2s decode` of the same words.
#
#   scripts/serve-bench.sh [MODEL_DIR (runs/g2p)] [SECONDS per run (30)] [OPTIONS_JSON ({})]
#
# SERVE_ARGS adds options to s2s serve (e.g. "--workers 1"). MAX_WAIT=N sets the server's --max-wait-ms (default 0, the server's default). Prints one JSON line per run and a
# Markdown table (also in target/serve-bench/table.md).
# Run it on an otherwise idle machine.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:-runs/g2p}
SECS=${2:-30}
OPTIONS=${3:-{\}}
MAX_WAIT=${MAX_WAIT:-0}
OUT=target/serve-bench
mkdir -p "$OUT"
cargo build --release -q -p s2s-cli
cargo build --release -q -p s2s-benches --example serve_load
S=target/release/s2s
LOAD=target/release/examples/serve_load

# 2,000 CMUdict words (every 60th entry, alternative pronunciations left out).
awk 'NR % 60 == 0 && $1 !~ /\(/ { print tolower($1) }' data/cmudict/cmudict.dict | head -2000 > "$OUT/words.txt"
for _ in $(seq 20); do cat "$OUT/words.txt"; done > "$OUT/words-x20.txt"
N=$(wc -l < "$OUT/words-x20.txt")

# Offline: the 40,000 words through s2s decode (greedy unless OPTIONS says otherwise is not
# mirrored here: keep OPTIONS to {} for the comparison), model loading included.
start=$(date +%s.%N)
$S decode --model "$MODEL" < "$OUT/words-x20.txt" > /dev/null
end=$(date +%s.%N)
OFFLINE=$(python3 -c "print($N / ($end - $start))")
# One word at a time (batches of one, one worker): the latency of decoding a word alone.
start=$(date +%s.%N)
$S decode --model "$MODEL" --batch-size 1 --workers 1 < "$OUT/words.txt" > /dev/null
end=$(date +%s.%N)
ALONE_MS=$(python3 -c "print(1000 * ($end - $start) / $(wc -l < "$OUT/words.txt"))")
echo "{\"offline_words_per_second\": $OFFLINE, \"words\": $N, \"alone_ms_per_word\": $ALONE_MS}"
# The ceiling of rounds of R words: the same words decoded in process, R per call, no HTTP.
cargo build --release -q -p s2s-benches --example serve_rounds
target/release/examples/serve_rounds "$MODEL" "$OUT/words.txt" 20 64 32 16 | tee "$OUT/rounds.jsonl"

: > "$OUT/runs.jsonl"
# A fresh server for each row, so that its CPU time and its rounds (printed when it stops)
# are that row's. The clients run on the same cores as the server: their CPU is measured too.
for clients in 1 16 64; do
    $S serve --model "$MODEL" --port 0 --max-wait-ms "$MAX_WAIT" ${SERVE_ARGS:-} 2> "$OUT/server.log" &
    SERVER=$!
    trap 'kill -TERM $SERVER 2>/dev/null || true' EXIT
    PORT=""
    for _ in $(seq 100); do
        PORT=$(grep -o 'listening on http://127.0.0.1:[0-9]*' "$OUT/server.log" | grep -o '[0-9]*$' || true)
        [ -n "$PORT" ] && break
        sleep 0.1
    done
    [ -n "$PORT" ] || { cat "$OUT/server.log"; exit 1; }
    before=$(awk '{ print $14 + $15 }' /proc/$SERVER/stat)
    /usr/bin/time -f '%U %S' -o "$OUT/client-time.txt" \
        $LOAD "$PORT" "$clients" "$SECS" "$OUT/words.txt" "$OPTIONS" > "$OUT/run.json"
    after=$(awk '{ print $14 + $15 }' /proc/$SERVER/stat)
    kill -TERM $SERVER
    wait $SERVER || true
    trap - EXIT
    ROUND=$(grep -o '([0-9.]* inputs a round)' "$OUT/server.log" | grep -o '[0-9.]*' || echo 0)
    python3 -c "
import json, os
r = json.load(open('$OUT/run.json'))
u, s = map(float, open('$OUT/client-time.txt').read().split()[-2:])
r['client_cpu_seconds'] = u + s
r['server_cpu_seconds'] = ($after - $before) / os.sysconf('SC_CLK_TCK')
r['inputs_per_round'] = float('$ROUND')
print(json.dumps(r))" | tee -a "$OUT/runs.jsonl"
done

python3 - "$OUT/runs.jsonl" "$OFFLINE" "$MODEL" "$ALONE_MS" "$MAX_WAIT" > "$OUT/table.md" <<'PY'
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
offline = float(sys.argv[2])
print(f"model {sys.argv[3]}, --max-wait-ms {sys.argv[5]}; offline s2s decode: {offline:.0f} words/s; "
      f"one word decoded alone: {float(sys.argv[4]):.2f} ms\n")
print("| clients | requests/s | words/s | of offline | p50 latency | p99 latency | failed | inputs a round | server's CPU | the clients' CPU |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in runs:
    cpu = r["client_cpu_seconds"] / r["seconds"]
    server = r["server_cpu_seconds"] / r["seconds"]
    print(f"| {r['clients']} | {r['requests_per_second']:.0f} | {r['words_per_second']:.0f} | "
          f"{100 * r['words_per_second'] / offline:.0f}% | {r['p50_ms']:.1f} ms | {r['p99_ms']:.1f} ms | "
          f"{r['failed']} | {r['inputs_per_round']:.1f} | {server:.2f} cores | {cpu:.2f} cores |")
PY
cat "$OUT/table.md"
