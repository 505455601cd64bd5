"""Text <-> ids as an s2s model folder defines them: the tokenizers named in `config.json`
(`"chars"`, `"whitespace"` or `{"bpe": <Hugging Face tokenizer.json>}`) and the vocabularies
`source_vocab.json` / `target_vocab.json` (`{"tokens": [...]}`, ids in order)."""

from __future__ import annotations

import json
from pathlib import Path

PAD, SOS, EOS, UNK = 0, 1, 2, 3


class Tokenizer:
    """One side's tokenizer (`s2s_data::Tokenizer`)."""

    def __init__(self, spec):
        self.spec = spec
        self._bpe = None
        if isinstance(spec, dict) and "bpe" in spec:
            try:
                from tokenizers import Tokenizer as HfTokenizer
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError(
                    "this model uses a BPE tokenizer: install the `tokenizers` package"
                ) from e
            self._bpe = HfTokenizer.from_str(json.dumps(spec["bpe"]))
        elif spec not in ("chars", "whitespace"):
            raise ValueError(f"unknown tokenizer {spec!r}")

    def tokenize(self, text: str) -> list[str]:
        if self._bpe is not None:
            return self._bpe.encode(text, add_special_tokens=False).tokens
        if self.spec == "chars":
            return list(text)
        return text.split()

    def detokenize(self, tokens: list[str]) -> str:
        if self._bpe is not None:
            return self._bpe.decoder.decode(tokens)
        return "".join(tokens) if self.spec == "chars" else " ".join(tokens)


class Vocab:
    """Tokens and their ids; `<pad> <sos> <eos> <unk>` are ids 0-3."""

    def __init__(self, tokens: list[str]):
        self.tokens = list(tokens)
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def load(cls, path: Path) -> "Vocab":
        return cls(json.loads(Path(path).read_text(encoding="utf-8"))["tokens"])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: list[str]) -> list[int]:
        return [self.ids.get(t, UNK) for t in tokens]

    def decode(self, ids: list[int]) -> list[str]:
        """Tokens of `ids` up to the first `<eos>`, without `<pad>`/`<sos>`."""
        out = []
        for i in ids:
            if i == EOS:
                break
            if i not in (PAD, SOS):
                out.append(self.tokens[i] if i < len(self.tokens) else "<unk>")
        return out


class TextCodec:
    """Both sides of a model folder."""

    def __init__(self, folder):
        folder = Path(folder)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.source_tokenizer = Tokenizer(config["source_tokenizer"])
        self.target_tokenizer = Tokenizer(config["target_tokenizer"])
        self.source_vocab = Vocab.load(folder / "source_vocab.json")
        self.target_vocab = Vocab.load(folder / "target_vocab.json")

    def encode_source(self, text: str) -> list[int]:
        return self.source_vocab.encode(self.source_tokenizer.tokenize(text.strip()))

    def decode_target(self, ids: list[int]) -> str:
        return self.target_tokenizer.detokenize(self.target_vocab.decode(ids))
