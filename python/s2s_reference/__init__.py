"""s2s_reference: the s2s sequence-to-sequence model as a PyTorch module.

- `Seq2Seq(config)`: the model of an s2s `config.json`, with PyTorch's parameter names (the
  layout of an s2s model's `model.safetensors`, see docs/model-format.md);
- `TextCodec(folder)`: the folder's tokenizers and vocabularies;
- `greedy`, `beam`: decoding as `s2s decode` does it.

Dependencies: torch (and safetensors to read model files; tokenizers for BPE models).
"""

from .decode import beam, greedy, source_batch
from .model import ConfigError, Memory, Seq2Seq, model_config
from .text import EOS, PAD, SOS, UNK, TextCodec, Tokenizer, Vocab

__all__ = [
    "ConfigError", "EOS", "Memory", "PAD", "SOS", "Seq2Seq", "TextCodec", "Tokenizer", "UNK",
    "Vocab", "beam", "greedy", "model_config", "source_batch",
]
