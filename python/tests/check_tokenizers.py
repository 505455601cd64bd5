#!/usr/bin/env python3
"""Checks that Hugging Face's `tokenizers` reads an s2s model folder's BPE tokenizers and
tokenizes as s2s does.

    python python/tests/check_tokenizers.py DIR

DIR is an s2s model folder whose tokenizers are `{"bpe": <tokenizer.json>}`, with
`expected.json` written by s2s: `sentences` (source and target texts), s2s's `source` and
`target` tokens of each, and its `source_ids` (the source vocabulary's ids). The folder's
tokenizers are loaded with `tokenizers.Tokenizer.from_str` (through `s2s_reference.TextCodec`)
and must give the same tokens and ids, and detokenize them back as s2s does (`detok`). Prints
one JSON line; exits with status 1 when a check fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s2s_reference import TextCodec  # noqa: E402


def main() -> int:
    folder = Path(sys.argv[1])
    expected = json.loads((folder / "expected.json").read_text(encoding="utf-8"))
    codec = TextCodec(folder)
    counts = {"source": 0, "target": 0, "source_ids": 0, "detok": 0}
    for i, (source, target) in enumerate(expected["sentences"]):
        src = codec.source_tokenizer.tokenize(source)
        tgt = codec.target_tokenizer.tokenize(target)
        counts["source"] += src == expected["source"][i]
        counts["target"] += tgt == expected["target"][i]
        counts["source_ids"] += codec.encode_source(source) == expected["source_ids"][i]
        counts["detok"] += codec.target_tokenizer.detokenize(tgt) == expected["detok"][i]
    total = len(expected["sentences"])
    print(json.dumps({**counts, "total": total}))
    return 0 if all(v == total for v in counts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
