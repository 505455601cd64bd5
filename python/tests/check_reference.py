#!/usr/bin/env python3
"""Checks the reference module against what s2s computed for the same weights.

    python python/tests/check_reference.py DIR

DIR holds `model.safetensors` and `model.pt` (an s2s model's weights in PyTorch's names, as
safetensors and as a `torch.save` state_dict), `config.json` and
`expected.json` written by s2s: `forced` (a padded batch: `source`, `lengths`,
`target_input`), `logits` (s2s's teacher-forced logits of that batch, flat), `sources` (id
lists) and `greedy` (s2s's greedy outputs of those sources, `max_len`). The module loads the
weights with `load_state_dict(strict=True)` (after checking that `torch.load(weights_only=True)`
of `model.pt` and `safetensors.torch.load_file` give the same tensors), computes both, and
prints one JSON line:
`max_rel` (the largest |a - b| / (1 + |b|) over the logits) and how many greedy outputs are
equal. It exits with status 1 when a check fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s2s_reference import Seq2Seq, greedy  # noqa: E402
from s2s_reference.files import load_safetensors  # noqa: E402

TOLERANCE = 1e-4


def main() -> int:
    folder = Path(sys.argv[1])
    torch.set_num_threads(1)
    config = json.loads((folder / "config.json").read_text())
    expected = json.loads((folder / "expected.json").read_text())
    model = Seq2Seq(config)
    state = load_safetensors(folder / "model.safetensors")
    pt = torch.load(folder / "model.pt", weights_only=True)
    # Hugging Face's own reader gives the same tensors as this package's.
    from safetensors.torch import load_file

    for other, name in [(pt, "model.pt"), (load_file(folder / "model.safetensors"), "load_file")]:
        if sorted(other) != sorted(state) or any(not torch.equal(other[k], state[k]) for k in state):
            print(json.dumps({"error": f"{name} and model.safetensors hold different tensors"}))
            return 1
    model.load_state_dict(pt, strict=True)
    model.eval()
    forced = expected["forced"]
    with torch.no_grad():
        logits = model(
            torch.tensor(forced["source"]),
            torch.tensor(forced["lengths"]),
            torch.tensor(forced["target_input"]),
        ).flatten()
    want = torch.tensor(expected["logits"])
    max_rel = float(((logits - want).abs() / (1 + want.abs())).max())
    outputs = []
    sources = expected["sources"]
    for start in range(0, len(sources), 64):
        outputs += greedy(model, sources[start : start + 64], max_len=expected["max_len"])
    equal = sum(a == b for a, b in zip(outputs, expected["greedy"]))
    result = {"max_rel": max_rel, "greedy_equal": equal, "greedy_total": len(sources)}
    print(json.dumps(result))
    ok = max_rel <= TOLERANCE and equal == len(sources) == len(expected["greedy"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
