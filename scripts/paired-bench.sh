#!/usr/bin/env bash
# Paired before/after runs of `s2s-bench run` for a refactor that must not cost speed.
#
#   scripts/paired-bench.sh BEFORE_REV [ROUNDS] [BACKENDS] [CELLS]
#
# Builds `s2s-bench` (release, the listed backends) at BEFORE_REV in a git worktree with a
# target folder of its own (target/paired-bench/before-target), and at the working tree; exports the
# benchmark model of each cell (`runs/g2p` / `runs/g2p-lstm` when trained, as `cargo xtask
# bench` does); then runs the two binaries alternately, ROUNDS times per backend and cell, each
# with 2 threads and 2 workers. Prints every run's training tok/s, greedy and beam-5 words/s and
# the median after/before ratio of each. Results in target/paired-bench/.
set -euo pipefail
before=${1:?usage: scripts/paired-bench.sh BEFORE_REV [ROUNDS] [BACKENDS] [CELLS]}
rounds=${2:-5}
backends=${3:-flex,tch}
cells=${4:-gru,lstm}
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/target/paired-bench
mkdir -p "$out"
venv=$root/.venv
[ -x "$venv/bin/python" ] || cargo xtask venv
export LIBTORCH_USE_PYTORCH=1 PATH="$venv/bin:$PATH"
export LD_LIBRARY_PATH="$("$venv/bin/python" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))'):${LD_LIBRARY_PATH:-}"
features=$(echo "$backends" | tr ',' '\n' | sed 's|^|s2s-benches/|' | paste -sd, -)

tree=$out/before-tree
[ -d "$tree" ] || git -C "$root" worktree add --detach "$tree" "$before"
git -C "$tree" checkout --quiet --detach "$before"
# The before-tree builds in a target folder of its own: the two trees' workspace crates have
# the same names, versions and relative paths, so in one shared folder their artifacts share
# file names and fingerprints, and one tree's build can link the other's crates (seen: the
# working tree's build took the before-tree's s2s-tensor).
(cd "$tree" && CARGO_TARGET_DIR=$out/before-target cargo build --release -p s2s-benches --features "$features")
cp "$out/before-target/release/s2s-bench" "$out/s2s-bench-before"
(cd "$root" && cargo build --release -p s2s-benches --features "$features")
cp "$root/target/release/s2s-bench" "$out/s2s-bench-after"

: > "$out/runs.jsonl"
for cell in ${cells//,/ }; do
  model=()
  for dir in "$root/runs/g2p" "$root/runs/g2p-$cell"; do
    if grep -qs "\"cell\": *\"$cell\"" "$dir/best/config.json"; then model=(--model "$dir"); break; fi
  done
  "$out/s2s-bench-after" export --cell "$cell" --out "$out/$cell" "${model[@]}" > /dev/null
  for backend in ${backends//,/ }; do
    for round in $(seq "$rounds"); do
      # Alternate which side goes first, so that a trend over time hits both alike.
      sides=(before after)
      [ $((round % 2)) -eq 0 ] && sides=(after before)
      for side in "${sides[@]}"; do
        line=$("$out/s2s-bench-$side" run --backend "$backend" --model "$out/$cell/checkpoint" --threads 2 --workers 2)
        echo "{\"side\":\"$side\",\"cell\":\"$cell\",\"backend\":\"$backend\",\"round\":$round,\"result\":$line}" | tee -a "$out/runs.jsonl"
      done
    done
  done
done

python3 - "$out/runs.jsonl" <<'PY'
import json, sys, statistics
runs = [json.loads(l) for l in open(sys.argv[1])]
keys = ["train_tok_s", "greedy_words_s", "beam5_words_s"]
groups = {}
for r in runs:
    groups.setdefault((r["cell"], r["backend"], r["round"]), {})[r["side"]] = r["result"]
print("| cell | backend | figure | before (median) | after (median) | after/before, median of pairs | pairs after > before |")
print("|---|---|---|---|---|---|---|")
for cell, backend in sorted({(c, b) for c, b, _ in groups}):
    pairs = [v for (c, b, _), v in sorted(groups.items()) if (c, b) == (cell, backend) and len(v) == 2]
    for k in keys:
        if k not in pairs[0]["before"]:
            continue
        bs = [p["before"][k] for p in pairs]
        as_ = [p["after"][k] for p in pairs]
        ratios = [a / b for a, b in zip(as_, bs)]
        wins = sum(a > b for a, b in zip(as_, bs))
        print(f"| {cell} | {backend} | {k} | {statistics.median(bs):.0f} | {statistics.median(as_):.0f} | {statistics.median(ratios):.3f} | {wins}/{len(pairs)} |")
PY
