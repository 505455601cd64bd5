"""safetensors files without the `safetensors` package (the format is an 8-byte little-endian
header length, a JSON header and the raw tensors; `safetensors.torch.load_file` reads the
same files), and the model folder's weights."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16}


class FormatError(ValueError):
    """A file that is not a readable safetensors file."""


def load_safetensors(path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 8:
        raise FormatError(f"{path}: too short for a safetensors file ({len(data)} bytes)")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise FormatError(f"{path}: header of {n} bytes in a file of {len(data)} bytes")
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as e:
        raise FormatError(f"{path}: header is not JSON ({e})") from e
    body = memoryview(data)[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise FormatError(f"{path}: tensor {name} has unsupported dtype {info.get('dtype')}")
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(body):
            raise FormatError(f"{path}: tensor {name} lies outside the file (truncated?)")
        t = torch.frombuffer(bytearray(body[start:end]), dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"])
    return out


def save_safetensors(tensors: dict[str, torch.Tensor], path, metadata: dict | None = None) -> None:
    """Writes tensors (converted to contiguous F32) as a safetensors file."""
    header: dict = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to(torch.float32).contiguous().cpu()
        blob = t.numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


SPECIALS = ["<pad>", "<sos>", "<eos>", "<unk>"]


def save_model_folder(
    model,
    folder,
    source_tokens: list[str],
    target_tokens: list[str],
    source_tokenizer="chars",
    target_tokenizer="whitespace",
    task: str = "custom",
    max_decode_len: int = 50,
) -> None:
    """Writes an s2s model folder (layout 2, docs/model-format.md) of a reference `Seq2Seq`:
    `config.json`, `source_vocab.json`, `target_vocab.json` and `model.safetensors`, which
    `s2s decode --model FOLDER` (and every other command) reads as it is.

    The token lists are the vocabularies, ids in order, starting with `<pad> <sos> <eos>
    <unk>`; the tokenizers are `"chars"`, `"whitespace"` or `{"bpe": <tokenizer.json>}`.
    `folder` must not exist yet."""
    folder = Path(folder)
    for side, tokens, size in [
        ("source", source_tokens, model.config["src_vocab"]),
        ("target", target_tokens, model.config["tgt_vocab"]),
    ]:
        if list(tokens[:4]) != SPECIALS:
            raise ValueError(f"the {side} vocabulary must start with {' '.join(SPECIALS)}")
        if len(tokens) != size:
            raise ValueError(f"the {side} vocabulary has {len(tokens)} tokens, the model {size}")
    folder.mkdir(parents=True, exist_ok=False)
    config = {
        "format": 2,
        "task": task,
        "model": model.config,
        "source_tokenizer": source_tokenizer,
        "target_tokenizer": target_tokenizer,
        "max_decode_len": max_decode_len,
        "summary": {"written_by": "s2s_reference"},
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    for side, tokens in [("source", source_tokens), ("target", target_tokens)]:
        text = json.dumps({"tokens": list(tokens)}, indent=2, ensure_ascii=False)
        (folder / f"{side}_vocab.json").write_text(text, encoding="utf-8")
    save_safetensors(model.state_dict(), folder / "model.safetensors", {"format": "pt"})
