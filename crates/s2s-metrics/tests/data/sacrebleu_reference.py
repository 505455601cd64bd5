"""Computes the s2s-metrics test cases with sacreBLEU itself.

Usage (from the workspace root):
    .venv/bin/python crates/s2s-metrics/tests/data/sacrebleu_reference.py \
        crates/s2s-metrics/tests/data/cases.json [--rust]

Prints one JSON object per case (a JSON list), or, with --rust, the table of recorded
expectations pasted into crates/s2s-metrics/tests/sacrebleu_recorded.rs. Files are read as the
sacrebleu command line reads them: UTF-8, newline="\\n", each line rstrip()-ed.
"""

import json
import os
import sys

import sacrebleu
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.utils import sum_of_lists


def read_lines(path):
    with open(path, encoding="utf-8", newline="\n") as f:
        return [line.rstrip() for line in f]


def run_case(case, data_dir):
    hyps = read_lines(os.path.join(data_dir, case["hyp"]))
    refs = [read_lines(os.path.join(data_dir, r)) for r in case["refs"]]
    metric = (BLEU if case["metric"] == "bleu" else CHRF)(**case["args"])
    # Statistics first: BLEU's add-k smoothing modifies the counts list it scores.
    stats = [int(x) for x in sum_of_lists(metric._extract_corpus_statistics(hyps, refs))]
    score = metric.corpus_score(hyps, refs)
    sig = metric.get_signature().format()
    out = {
        "name": case["name"],
        "metric": case["metric"],
        "score": score.score,
        "signature": sig,
        "display": score.format(),
        "with_signature": score.format(width=6, signature=sig),
    }
    if case["metric"] == "bleu":
        order = metric.max_ngram_order
        out.update(
            sys_len=stats[0],
            ref_len=stats[1],
            counts=stats[2 : 2 + order],
            totals=stats[2 + order :],
            bp=score.bp,
            precisions=[float(p) for p in score.precisions],
        )
    else:
        out["stats"] = [stats[i : i + 3] for i in range(0, len(stats), 3)]
    return out


def main():
    cases_path = sys.argv[1]
    data_dir = os.path.dirname(os.path.abspath(cases_path))
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)
    results = [run_case(c, data_dir) for c in cases]
    if "--rust" in sys.argv[2:]:
        print(f"// sacreBLEU {sacrebleu.__version__}")
        for r in results:
            if r["metric"] == "bleu":
                print(
                    f'    Expected {{ name: "{r["name"]}", score: {r["score"]!r}, '
                    f'signature: "{r["signature"]}", '
                    f'detail: Detail::Bleu {{ sys_len: {r["sys_len"]}, ref_len: {r["ref_len"]}, '
                    f'counts: &{r["counts"]}, totals: &{r["totals"]} }} }},'
                )
            else:
                stats = ", ".join(f"[{a}, {b}, {c}]" for a, b, c in r["stats"])
                print(
                    f'    Expected {{ name: "{r["name"]}", score: {r["score"]!r}, '
                    f'signature: "{r["signature"]}", detail: Detail::Chrf {{ stats: &[{stats}] }} }},'
                )
    else:
        print(json.dumps({"version": sacrebleu.__version__, "results": results}, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
