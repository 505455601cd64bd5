#!/usr/bin/env python3
"""Trains the reference module in PyTorch, for s2s to import (the other direction of
check_reference.py).

    python python/tests/train_reference.py DIR [STEPS]

DIR holds `setup/` (an s2s model folder: `config.json` with the model configuration and
tokenizers, the vocabularies; its weights are not used), `train.tsv` and `test.tsv`
(`word<TAB>phonemes` lines). The module is built from `setup/config.json`, trained for STEPS
(default 300) Adam steps of 64 pairs on `train.tsv` (cross-entropy on `y1 .. yn <eos>` after
teacher-forced `<sos> y1 .. yn`), and saved with `torch.save(model.state_dict(),
DIR/trained.pt)` (and, for the errors of s2s import, `whole_model.pt`: `torch.save(model)`,
and `checkpoint.pt`: `{"model": state_dict, "step": STEPS}`), and written as a model folder
`DIR/python_folder` (`s2s_reference.files.save_model_folder`). `DIR/python.json` gets what s2s must reproduce after `s2s import`: the
teacher-forced logits of the first 16 test pairs (`forced`: `source`, `lengths`,
`target_input`; `logits`, flat), and the greedy outputs of every test word (`sources`,
`greedy` ids, `texts`, `max_len`).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from s2s_reference import EOS, PAD, SOS, Seq2Seq, TextCodec, greedy, source_batch  # noqa: E402
from s2s_reference.files import save_model_folder  # noqa: E402

MAX_LEN = 40


def pairs(path: Path) -> list[tuple[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [tuple(line.split("\t", 1)) for line in lines if line]


def encode(codec: TextCodec, batch: list[tuple[str, str]]):
    """A padded training batch: source, lengths, target input and output."""
    sources = [codec.encode_source(s) for s, _ in batch]
    targets = [codec.target_vocab.encode(codec.target_tokenizer.tokenize(t)) for _, t in batch]
    source, lengths = source_batch(sources)
    width = max(len(t) for t in targets) + 1
    target_input = torch.tensor([[SOS] + t + [PAD] * (width - 1 - len(t)) for t in targets])
    target_output = torch.tensor([t + [EOS] + [PAD] * (width - 1 - len(t)) for t in targets])
    return source, lengths, target_input, target_output


def main() -> int:
    folder = Path(sys.argv[1])
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 300
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = random.Random(0)
    config = json.loads((folder / "setup" / "config.json").read_text())
    codec = TextCodec(folder / "setup")
    model = Seq2Seq(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = pairs(folder / "train.tsv")
    model.train()
    for step in range(steps):
        batch = rng.sample(train, 64)
        source, lengths, target_input, target_output = encode(codec, batch)
        logits = model(source, lengths, target_input)
        loss = F.cross_entropy(logits.flatten(0, 1), target_output.flatten(), ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    model.eval()
    torch.save(model.state_dict(), folder / "trained.pt")
    # Files that are not a state_dict, which s2s import must refuse with a clear error.
    torch.save(model, folder / "whole_model.pt")
    torch.save({"model": model.state_dict(), "step": steps}, folder / "checkpoint.pt")
    # The same model as a model folder that s2s reads without `s2s import`.
    save_model_folder(
        model, folder / "python_folder", codec.source_vocab.tokens, codec.target_vocab.tokens,
        config["source_tokenizer"], config["target_tokenizer"], task="g2p", max_decode_len=MAX_LEN,
    )

    test = pairs(folder / "test.tsv")
    source, lengths, target_input, _ = encode(codec, test[:16])
    with torch.no_grad():
        logits = model(source, lengths, target_input).flatten()
    sources = [codec.encode_source(s) for s, _ in test]
    outputs = []
    for start in range(0, len(sources), 64):
        outputs += greedy(model, sources[start : start + 64], max_len=MAX_LEN)
    result = {
        "loss": float(loss),
        "forced": {
            "source": source.tolist(),
            "lengths": lengths.tolist(),
            "target_input": target_input.tolist(),
        },
        "logits": logits.tolist(),
        "sources": sources,
        "greedy": outputs,
        "texts": [codec.decode_target(o) for o in outputs],
        "max_len": MAX_LEN,
    }
    (folder / "python.json").write_text(json.dumps(result))
    print(json.dumps({"steps": steps, "loss": float(loss)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
