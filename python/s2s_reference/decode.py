"""Greedy and beam decoding with the reference module (batched greedy as `s2s decode`
runs it; a per-sentence beam search with s2s's defaults: no length penalty, a sentence
stops when no open beam can beat its n-th best finished hypothesis)."""

from __future__ import annotations

import torch

from .model import Seq2Seq, log_probs
from .text import EOS, PAD, SOS


def source_batch(sources: list[list[int]], device=None):
    """Pads id lists into [batch, src_len] (with `<pad>`), with their lengths (CPU int64)."""
    width = max((len(s) for s in sources), default=0)
    rows = [s + [PAD] * (width - len(s)) for s in sources]
    source = torch.tensor(rows, dtype=torch.long, device=device).reshape(len(rows), width)
    return source, torch.tensor([len(s) for s in sources], dtype=torch.long)


@torch.no_grad()
def greedy(model: Seq2Seq, sources: list[list[int]], max_len: int = 50) -> list[list[int]]:
    """The most likely token at every step, for a batch of non-empty sources; each output
    ends before its `<eos>` or after `max_len` tokens."""
    device = next(model.parameters()).device
    source, lengths = source_batch(sources, device)
    memory, state = model.encode(source, lengths)
    tokens = torch.full((len(sources),), SOS, dtype=torch.long, device=device)
    outputs: list[list[int]] = [[] for _ in sources]
    done = [False] * len(sources)
    for _ in range(max_len + 1):
        logits, state, _ = model.step(tokens, state, memory)
        tokens = logits.argmax(dim=1)
        for i, t in enumerate(tokens.tolist()):
            if done[i]:
                continue
            if t == EOS or len(outputs[i]) == max_len:
                done[i] = True
            else:
                outputs[i].append(t)
        if all(done):
            break
    return outputs


@torch.no_grad()
def beam(
    model: Seq2Seq, source: list[int], beam_size: int = 5, max_len: int = 50, n_best: int = 1
) -> list[tuple[list[int], float]]:
    """The `n_best` best outputs of one source with their log-probabilities, best first."""
    device = next(model.parameters()).device
    src, lengths = source_batch([source], device)
    memory, state = model.encode(src, lengths)
    beams = [([], 0.0)]
    finished: list[tuple[list[int], float]] = []
    for step in range(max_len + 1):
        rows = torch.zeros(len(beams), dtype=torch.long, device=device)
        tokens = torch.tensor([b[0][-1] if b[0] else SOS for b in beams], device=device)
        logits, state, _ = model.step(tokens, state, memory.select(rows))
        logp = log_probs(logits)
        if step == max_len:
            for (prefix, score), row in zip(beams, logp):
                best = int(row.argmax())
                if best == EOS:
                    finished.append((prefix, score + float(row[best])))
                else:
                    finished.append((prefix, score))
            break
        candidates = [
            (score + float(lp), b, t)
            for b, ((prefix, score), row) in enumerate(zip(beams, logp))
            for t, lp in enumerate(row.tolist())
        ]
        candidates.sort(key=lambda c: (-c[0], c[1], c[2]))
        new_beams, parents = [], []
        for rank, (score, b, t) in enumerate(candidates[: 2 * beam_size]):
            if t == EOS:
                if rank < beam_size:
                    finished.append((beams[b][0], score))
                continue
            new_beams.append((beams[b][0] + [t], score))
            parents.append(b)
            if len(new_beams) == beam_size:
                break
        beams = new_beams
        if len(finished) >= n_best:
            worst_kept = sorted((s for _, s in finished), reverse=True)[n_best - 1]
            if not beams or max(s for _, s in beams) <= worst_kept:
                break
        if not beams:
            break
        state = model.select_state(state, torch.tensor(parents, device=device))
    finished.sort(key=lambda h: -h[1])
    return finished[:n_best]
