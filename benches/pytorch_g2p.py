#!/usr/bin/env python3
"""The PyTorch side of the s2s backend comparison benchmark (shared/docs/benchmark.md).

It builds the "g2p-bench" model of s2s (`crates/s2s-nn`) as the reference PyTorch module of
`python/s2s_reference` (`nn.GRU`/`nn.LSTM` over packed sequences for the bidirectional
encoder, a `nn.GRUCell`/`nn.LSTMCell` decoder with Bahdanau attention run step by step), loads the
weights that `s2s-bench export` wrote, checks that it computes what the Rust model computes,
and then measures, on the same batches as the Rust side:

- training throughput (target tokens/s: forward with teacher forcing, backward, gradient
  clipping at norm 1.0 and an Adam step, from the exported weights);
- batched greedy decoding (words/s over the test words, batches of 64, max length 40; the
  median of DECODE_PASSES passes over the words, as on the Rust side);
- the per-sentence beam search loop (beam 5) that tutorial code uses, for reference;
- the peak resident set size of the process;
- with --phases, in extra passes: the median time of each phase of a training step, the
  share of training and of greedy decoding that the profiler finds in matrix products, and
  the best torch.mm rate at the model's shapes (GFLOP/s).

Usage (from the virtualenv that provides torch):

    s2s-bench export --cell gru --out DIR [--model runs/g2p]
    python benches/pytorch_g2p.py --dir DIR [--threads N] [--device cpu|cuda] \
        [--no-train] [--no-beam] [--phases]

It prints exactly one JSON line on stdout; progress and the parity report go to stderr.
Only torch, the standard library and python/s2s_reference are used.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

# The profiler of --phases (kineto) logs an ERROR line on a CUDA build of torch when no GPU
# is present, although CPU profiling works; keep its log to fatal messages. This has to be
# set before torch is imported.
os.environ.setdefault("KINETO_LOG_LEVEL", "5")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

# The parity check fails above this max relative error |a - b| / (1 + |b|) on the logits,
# and above this largest |a - b| over a parameter's gradient, divided by the parameter's
# largest gradient value.
PARITY_TOLERANCE = 1e-4
# Beam width and the number of test words the per-sentence beam loop decodes (it is slow).
BEAM_SIZE = 5
BEAM_LOOP_WORDS = 200
# Passes over the test words for the greedy figure, which is the median pass (the same
# constant as DECODE_PASSES in benches/src/main.rs): one pass takes a fraction of a second,
# where a shared machine's slow spells last about as long.
DECODE_PASSES = 5
# Gradient clipping and optimiser settings of the Rust side (burn's AdamConfig defaults:
# betas 0.9 / 0.999, epsilon 1e-5).
CLIP_NORM = 1.0
LEARNING_RATE = 1e-3
ADAM_EPS = 1e-5


def log(*args) -> None:
    """Progress messages go to stderr; stdout carries only the JSON result."""
    print(*args, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------


# The model is the reference module of python/s2s_reference (the same model as s2s_nn's
# Seq2Seq, with PyTorch's parameter names; tested against s2s by
# benches/tests/reference_module.rs).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
from s2s_reference import Seq2Seq  # noqa: E402


# --------------------------------------------------------------------------------------
# Loading the exported weights
# --------------------------------------------------------------------------------------


def weight_map(model: Seq2Seq) -> dict:
    """Rust parameter path -> (torch parameter name, transpose?).

    burn's Linear and the fused RNN layers store weights as [d_in, d_out] (y = x W + b);
    torch stores [d_out, d_in], so every 2-D weight except the embeddings is transposed. The
    fused layers keep PyTorch's gate order (GRU r z n, LSTM i f g o) in their gate blocks,
    with the reset gate applied after the recurrent matmul as in torch's GRU, so the gate
    blocks need no reordering. (The names are those of docs/model-format.md.)
    """
    config = model.config
    rnn_layer = {"weight_ih": True, "weight_hh": True, "bias_ih": False, "bias_hh": False}
    mapping = {
        "encoder.embedding.weight": ("encoder.embedding.weight", False),
        "embedding.weight": ("decoder.embedding.weight", False),
        "output.weight": ("output.weight", True),
        "output.bias": ("output.bias", False),
    }
    for name, transpose in rnn_layer.items():
        for k in range(config["encoder_layers"]):
            mapping[f"encoder.forward_layers.{k}.{name}"] = (f"encoder.rnn.{name}_l{k}", transpose)
            if config["bidirectional"]:
                mapping[f"encoder.backward_layers.{k}.{name}"] = (
                    f"encoder.rnn.{name}_l{k}_reverse",
                    transpose,
                )
        for k in range(config["decoder_layers"]):
            mapping[f"decoder_layers.{k}.{name}"] = (f"decoder.layers.{k}.{name}", transpose)
    for name, _ in model.named_parameters():
        if name.startswith(("bridge_", "attention.")):
            # Linear layers: the same path on both sides.
            mapping[name] = (name, name.endswith(".weight"))
    return mapping


def load_weights(model: Seq2Seq, params: list) -> None:
    """Copies the exported parameters into the model; fails on any unused, missing or
    mis-shaped parameter."""
    mapping = weight_map(model)
    targets = dict(model.named_parameters())
    unmapped_torch = set(targets) - {t for t, _ in mapping.values()}
    if unmapped_torch:
        raise SystemExit(f"error: torch parameters without a Rust source: {sorted(unmapped_torch)}")
    seen = set()
    for p in params:
        name = p["name"]
        if name not in mapping:
            raise SystemExit(f"error: exported parameter {name!r} {p['shape']} has no torch counterpart")
        if name in seen:
            raise SystemExit(f"error: exported parameter {name!r} appears twice")
        seen.add(name)
        target_name, transpose = mapping[name]
        value = torch.tensor(p["data"], dtype=torch.float32)
        if value.numel() != math.prod(p["shape"]):
            raise SystemExit(f"error: {name}: {value.numel()} values for shape {p['shape']}")
        value = value.reshape(p["shape"])
        if transpose:
            value = value.t()
        target = targets[target_name]
        if tuple(value.shape) != tuple(target.shape):
            raise SystemExit(
                f"error: {name} {list(p['shape'])} does not fit {target_name} {list(target.shape)}"
                + (" after transposing" if transpose else "")
            )
        with torch.no_grad():
            target.copy_(value)
    missing = set(mapping) - seen
    if missing:
        raise SystemExit(f"error: parameters missing from the export: {sorted(missing)}")


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


def pad(rows: list, value: int) -> torch.Tensor:
    width = max(1, max(len(r) for r in rows))
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def source_batch(sources: list, pad_id: int, device: torch.device):
    """Padded sources on `device` and their lengths (int64, on the CPU for packing)."""
    if any(len(s) == 0 for s in sources):
        raise SystemExit("error: empty source sequence in a batch (cannot be packed)")
    lengths = torch.tensor([len(s) for s in sources], dtype=torch.long)
    return pad(sources, pad_id).to(device), lengths


def training_batch(examples: list, special: dict, device: torch.device):
    """Sources, lengths, decoder inputs `<sos> y`, outputs `y <eos>` and the number of
    target tokens that count in the loss (`<eos>` included)."""
    source, lengths = source_batch([e["source"] for e in examples], special["pad"], device)
    target_input = pad([[special["sos"]] + e["target"] for e in examples], special["pad"])
    target_output = pad([e["target"] + [special["eos"]] for e in examples], special["pad"])
    tokens = sum(len(e["target"]) + 1 for e in examples)
    return source, lengths, target_input.to(device), target_output.to(device), tokens


def inference_batches(sources: list, size: int) -> list:
    """Indices of the decoding batches: sorted by decreasing source length (ties by index),
    cut into batches of `size`, exactly as s2s's `decode_all` plans them."""
    order = sorted(range(len(sources)), key=lambda i: (-len(sources[i]), i))
    return [order[i : i + size] for i in range(0, len(order), size)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


def greedy_batch(model: Seq2Seq, sources: list, max_len: int, special: dict, device) -> list:
    """Greedy decoding of one batch; the batch stops when every row has produced <eos> or
    after `max_len` tokens. Returns the outputs without <eos>."""
    source, lengths = source_batch(sources, special["pad"], device)
    memory, state = model.encode(source, lengths)
    tokens = torch.full((len(sources),), special["sos"], dtype=torch.long, device=device)
    finished = torch.zeros(len(sources), dtype=torch.bool, device=device)
    steps = []
    for _ in range(max_len):
        logits, state, _ = model.step(tokens, state, memory)
        tokens = logits.argmax(dim=1)
        steps.append(tokens)
        finished |= tokens == special["eos"]
        if bool(finished.all()):
            break
    outputs = []
    for row in torch.stack(steps, dim=1).tolist():
        outputs.append(row[: row.index(special["eos"])] if special["eos"] in row else row)
    return outputs


def greedy_all(model, sources: list, batch: int, max_len: int, special: dict, device) -> list:
    """Greedy outputs of all `sources`, decoded in s2s's length-sorted batches, in input
    order. Empty sources get an empty output without running the model, as in s2s."""
    results = [[] for _ in sources]
    non_empty = [i for i, s in enumerate(sources) if s]
    for plan in inference_batches([sources[i] for i in non_empty], batch):
        indices = [non_empty[j] for j in plan]
        outputs = greedy_batch(model, [sources[i] for i in indices], max_len, special, device)
        for i, out in zip(indices, outputs):
            results[i] = out
    return results


def beam_search_loop(model, source: list, beam: int, max_len: int, special: dict, device) -> list:
    """Beam search over one sentence the way tutorial code writes it: a Python list of
    hypotheses (score, tokens, state), each advanced by its own decoder step; the `beam` best
    expansions are kept, those ending in <eos> are set aside as finished; the search stops
    when `beam` hypotheses have finished or after `max_len` steps. Scores are sums of
    log-probabilities (no length penalty). Returns the best output without <eos>."""
    src, lengths = source_batch([source], special["pad"], device)
    memory, state = model.encode(src, lengths)
    eos = special["eos"]
    live = [(0.0, [special["sos"]], state)]
    finished = []
    for _ in range(max_len):
        candidates = []
        for score, tokens, hyp_state in live:
            previous = torch.tensor([tokens[-1]], dtype=torch.long, device=device)
            logits, new_state, _ = model.step(previous, hyp_state, memory)
            logp = torch.log_softmax(logits, dim=1)[0]
            top_logp, top_ids = logp.topk(beam)
            for lp, token in zip(top_logp.tolist(), top_ids.tolist()):
                candidates.append((score + lp, tokens + [token], new_state))
        candidates.sort(key=lambda c: c[0], reverse=True)
        live = []
        for candidate in candidates[:beam]:
            (finished if candidate[1][-1] == eos else live).append(candidate)
        if len(finished) >= beam or not live:
            break
    best = max(finished or live, key=lambda c: c[0])
    tokens = best[1][1:]
    return tokens[:-1] if tokens and tokens[-1] == eos else tokens


# --------------------------------------------------------------------------------------
# Parity check and measurements
# --------------------------------------------------------------------------------------


def parity(model, data: dict, reference: dict, special: dict, device) -> dict:
    """Compares teacher-forced logits, greedy outputs and the gradients of one batch's loss
    with the Rust model's."""
    model.eval()
    examples = data["train_batches"][reference["batch"]]
    source, lengths, target_input, target_output, _ = training_batch(examples, special, device)
    with torch.inference_mode():
        logits = model(source, lengths, target_input).float().cpu()
        expected = torch.tensor(reference["logits"], dtype=torch.float32)
        shape = list(reference["logits_shape"])
        if list(logits.shape) != shape:
            raise SystemExit(f"error: logits shape {list(logits.shape)}, reference {shape}")
        expected = expected.reshape(shape)
        diff = (logits - expected).abs()
        max_abs = float(diff.max())
        max_rel = float((diff / (1.0 + expected.abs())).max())

        ref_greedy = reference["greedy"]
        sources = data["test_sources"][: len(ref_greedy)]
        greedy = greedy_all(model, sources, data["batch"], data["max_len"], special, device)
    equal = sum(a == b for a, b in zip(greedy, ref_greedy))
    grad_rel, grad_worst = gradient_parity(model, reference, special, source, lengths, target_input, target_output)
    log(
        f"parity: logits {shape} max abs diff {max_abs:.3e}, max rel diff {max_rel:.3e} "
        f"(tolerance {PARITY_TOLERANCE:g}); greedy outputs equal {equal}/{len(ref_greedy)}; "
        f"gradients: largest difference {grad_rel:.3e} of the parameter's largest value "
        f"({grad_worst})"
    )
    return {
        "max_abs": max_abs,
        "max_rel": max_rel,
        "greedy_equal": equal,
        "greedy_total": len(ref_greedy),
        "gradient_max_rel": grad_rel,
        "gradient_worst": grad_worst,
        "gradients_compared": len(reference["gradients"]),
    }


def gradient_parity(model, reference: dict, special: dict, source, lengths, target_input, target_output):
    """The gradient of every parameter for one batch's loss (mean cross-entropy over the
    non-pad positions, with the reference's label smoothing), against the exported Rust
    gradients. Returns the largest difference relative to the parameter's largest Rust
    gradient value, and that parameter's name."""
    model.zero_grad(set_to_none=True)
    logits = model(source, lengths, target_input)
    loss = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        target_output.reshape(-1),
        ignore_index=special["pad"],
        label_smoothing=reference["label_smoothing"],
    )
    loss.backward()
    mapping = weight_map(model)
    params = dict(model.named_parameters())
    worst, worst_name = 0.0, ""
    for g in reference["gradients"]:
        name = g["name"]
        if name not in mapping:
            raise SystemExit(f"error: exported gradient {name!r} has no torch parameter")
        target_name, transpose = mapping[name]
        grad = params[target_name].grad
        if grad is None:
            raise SystemExit(f"error: {target_name} got no gradient in PyTorch")
        grad = grad.t() if transpose else grad
        expected = torch.tensor(g["data"], dtype=torch.float32).reshape(g["shape"])
        if list(grad.shape) != list(expected.shape):
            raise SystemExit(f"error: gradient {name}: shape {list(grad.shape)}, reference {g['shape']}")
        scale = float(expected.abs().max())
        if scale == 0.0:
            raise SystemExit(f"error: the Rust gradient of {name} is zero")
        rel = float((grad.detach().float().cpu() - expected).abs().max()) / scale
        if not rel <= worst:  # also catches NaN
            worst, worst_name = rel, name
    model.zero_grad(set_to_none=True)
    return worst, worst_name


# The phases of a training step that --phases times (the same as s2s-bench's).
PHASES = ("forward", "backward", "clip", "optimizer")


def train_throughput(model, data: dict, special: dict, device, phases: bool = False):
    """Target tokens/s over the training steps after the warm-up steps.

    With `phases`, the device is synced after every phase of a step and the second result
    maps each of PHASES to its median milliseconds over the measured steps (the syncs slow
    the steps down, so the throughput of such a pass is not the one to report)."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, eps=ADAM_EPS)
    warmup = data["warmup_steps"]
    batches = data["train_batches"][: warmup + data["train_steps"]]
    tokens, start = 0, time.perf_counter()
    times = {p: [] for p in PHASES}
    for i, examples in enumerate(batches):
        if i == warmup:
            sync(device)
            tokens, start = 0, time.perf_counter()
            times = {p: [] for p in PHASES}
        lap = [time.perf_counter()]

        def phase_done(phase: str) -> None:
            if phases:
                sync(device)
                now = time.perf_counter()
                times[phase].append((now - lap[0]) * 1e3)
                lap[0] = now

        source, lengths, target_input, target_output, n = training_batch(examples, special, device)
        tokens += n
        logits = model(source, lengths, target_input)
        # Mean cross-entropy over the non-pad target positions.
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), target_output.reshape(-1), ignore_index=special["pad"]
        )
        phase_done("forward")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        phase_done("backward")
        nn.utils.clip_grad_norm_(model.parameters(), CLIP_NORM)
        phase_done("clip")
        optimizer.step()
        phase_done("optimizer")
    sync(device)
    seconds = time.perf_counter() - start
    log(f"training: {tokens} target tokens in {seconds:.2f} s, last loss {loss.item():.4f}")
    return tokens / seconds, {p: statistics.median(t) if t else 0.0 for p, t in times.items()}


# The matrix-product kernels whose share of the time --phases reports.
GEMM_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmv", "aten::mv")


def gemm_gflops(config: dict, device) -> float:
    """The best rate, in GFLOP/s, of torch.mm over the model's main decoder products at the
    benchmark's row counts (64 rows for greedy, 320 for beam 5) and of the encoder's
    sequence-wide input projection: what this machine's matrix-product library gives."""
    d_memory = 2 * config["d_hidden"]
    gates = 3 if config["cell"] == "gru" else 4
    d_gates = gates * config["d_decoder"]
    shapes = [
        (rows, k, d_gates)
        for rows in (64, 320)
        for k in (config["d_embed"] + d_memory, config["d_decoder"])
    ] + [(640, config["d_embed"], gates * config["d_hidden"])]
    best = 0.0
    with torch.inference_mode():
        for m, k, n in shapes:
            a = torch.randn(m, k, device=device)
            b = torch.randn(k, n, device=device)
            for _ in range(10):
                a @ b
            sync(device)
            reps, start = 200, time.perf_counter()
            for _ in range(reps):
                a @ b
            sync(device)
            seconds = (time.perf_counter() - start) / reps
            best = max(best, 2 * m * k * n / seconds / 1e9)
    return best


def gemm_share(run) -> float:
    """The share of the self CPU time of `run()` spent in matrix-product kernels, from the
    PyTorch profiler (CPU time, so it is meaningful for --device cpu only)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS)
    return gemm / total if total > 0 else 0.0


def greedy_throughput(model, data: dict, special: dict, device):
    """Words/s of batched greedy decoding over the test words after one warm-up batch: the
    median of DECODE_PASSES passes. Also returns every pass's words/s and the number of
    output tokens of one pass (<eos> excluded)."""
    model.eval()
    sources, batch, max_len = data["test_sources"], data["batch"], data["max_len"]
    passes = []
    with torch.inference_mode():
        greedy_all(model, sources[:batch], batch, max_len, special, device)
        for _ in range(DECODE_PASSES):
            sync(device)
            start = time.perf_counter()
            outputs = greedy_all(model, sources, batch, max_len, special, device)
            sync(device)
            passes.append(len(sources) / (time.perf_counter() - start))
    out_tokens = sum(len(o) for o in outputs)
    log(
        f"greedy: {len(sources)} words, {out_tokens} output tokens; words/s of "
        f"{DECODE_PASSES} passes: {', '.join(f'{p:.0f}' for p in passes)}"
    )
    return statistics.median(passes), passes, out_tokens


def beam_loop_throughput(model, data: dict, special: dict, device):
    """Words/s of the per-sentence beam loop over the first BEAM_LOOP_WORDS test words,
    after one warm-up word."""
    model.eval()
    words = data["test_sources"][:BEAM_LOOP_WORDS]
    with torch.inference_mode():
        beam_search_loop(model, words[0], BEAM_SIZE, data["max_len"], special, device)
        sync(device)
        start = time.perf_counter()
        outputs = [beam_search_loop(model, w, BEAM_SIZE, data["max_len"], special, device) for w in words]
        sync(device)
        seconds = time.perf_counter() - start
    out_tokens = sum(len(o) for o in outputs)
    log(f"beam loop: {len(words)} words in {seconds:.2f} s, {out_tokens} output tokens")
    return len(words) / seconds, len(words)


def peak_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux (what /usr/bin/time -v reports as maximum resident set size).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, type=Path, help="folder written by `s2s-bench export`")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="intra-op threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--no-train", action="store_true", help="leave out the training measurement")
    parser.add_argument("--no-beam", action="store_true", help="leave out the beam search loop")
    parser.add_argument(
        "--parity-only",
        action="store_true",
        help="only compare logits and greedy outputs with the Rust model's (the test of "
        "benches/tests/pytorch_parity.rs), no measurements",
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="also time the phases of a training step, and profile the share of training and "
        "greedy decoding spent in matrix products (extra passes, after the measurements)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError as e:  # only possible before any inter-op work started
        log(f"note: could not set the inter-op threads: {e}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but torch sees no CUDA device")
    device = torch.device(args.device)

    def read(name: str) -> dict:
        with open(args.dir / name) as f:
            return json.load(f)

    exported, data, reference = read("model.json"), read("data.json"), read("reference.json")
    config = exported["config"]
    if config.get("cell") != exported["cell"]:
        raise SystemExit(f"error: model.json cell {exported['cell']!r} but config cell {config.get('cell')!r}")
    special = {"pad": exported["pad"], "sos": exported["sos"], "eos": exported["eos"]}
    model = Seq2Seq(config)
    load_weights(model, exported.pop("params"))
    model.to(device)
    log(
        f"torch {torch.__version__}, device {device}, {args.threads} threads; "
        f"{'trained' if exported['trained'] else 'untrained'} {exported['cell']} model, "
        f"{sum(p.numel() for p in model.parameters())} parameters"
    )

    result = {
        "side": "pytorch",
        "device": args.device,
        "cell": exported["cell"],
        "threads": args.threads,
        "trained": exported["trained"],
    }
    result["parity"] = parity(model, data, reference, special, device)
    if not result["parity"]["max_rel"] <= PARITY_TOLERANCE:  # also catches NaN
        raise SystemExit(
            f"error: parity check failed: max relative logit difference "
            f"{result['parity']['max_rel']:.3e} > {PARITY_TOLERANCE:g}; "
            "the PyTorch port does not compute what the Rust model computes"
        )
    if not result["parity"]["gradient_max_rel"] <= PARITY_TOLERANCE:
        raise SystemExit(
            f"error: parity check failed: the gradient of {result['parity']['gradient_worst']} "
            f"differs by {result['parity']['gradient_max_rel']:.3e} of its largest value "
            f"> {PARITY_TOLERANCE:g}"
        )

    if args.parity_only:
        print(json.dumps(result))
        return
    if not args.no_train:
        # Train a copy, so that decoding is measured on the exported weights as in Rust.
        trainee = copy.deepcopy(model)
        result["train_tok_s"], _ = train_throughput(trainee, data, special, device)
        del trainee
    greedy = greedy_throughput(model, data, special, device)
    result["greedy_words_s"], result["greedy_words_s_passes"], result["greedy_out_tokens"] = greedy
    if not args.no_beam:
        result["beam5_loop_words_s"], result["beam5_loop_words"] = beam_loop_throughput(
            model, data, special, device
        )
    # Peak memory of the measurements above, before the extra passes.
    result["peak_rss_mib"] = peak_rss_mib()
    if args.phases:
        _, phases = train_throughput(copy.deepcopy(model), data, special, device, phases=True)
        for name, ms in phases.items():
            result[f"phase_{name}_ms"] = ms
        result["gemm_gflops"] = gemm_gflops(config, device)
        if args.device == "cpu":
            result["train_gemm_share"] = gemm_share(
                lambda: train_throughput(copy.deepcopy(model), data, special, device)
            )
            result["greedy_gemm_share"] = gemm_share(
                lambda: greedy_throughput(model, data, special, device)
            )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
