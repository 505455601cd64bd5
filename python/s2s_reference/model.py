"""The s2s attention encoder-decoder (`s2s_nn::Seq2Seq`) as a PyTorch module.

Every configuration that `s2s train` builds is supported: GRU or LSTM cells, Bahdanau
(additive), Luong dot or Luong general attention, any number of encoder and decoder layers, a
bidirectional or unidirectional encoder, with or without the bridge, dropout. The parameter
names and shapes are PyTorch's own (`nn.Embedding`, `nn.GRU`/`nn.LSTM` with `weight_ih_l0`,
`weight_hh_l0_reverse`, ..., `nn.GRUCell`/`nn.LSTMCell`, `nn.Linear` weights as `[out,
in]`): `state_dict()` is the
layout of an s2s model's `model.safetensors` (docs/model-format.md).

- encoder: embedding -> dropout -> a (bi)directional `nn.GRU`/`nn.LSTM` over the packed batch
  (dropout between layers), so that padding never enters a state;
- bridge: the decoder's initial state of every layer from the last encoder layer's final
  states, `tanh(Linear(concat(forward h, backward h)))` (and the same for the LSTM cell); zero
  states without the bridge;
- attention: the last decoder layer's state before the step queries the encoder outputs
  (Bahdanau `v^T tanh(W_q q + W_k k + b_k)`, dot `q^T k`, general `q^T W k`), padding masked;
- decoder: a stack of `nn.GRUCell`/`nn.LSTMCell` layers stepped one token at a time, the
  first over `concat(target embedding, context)`, dropout between layers;
- output: `Linear(concat(last layer's output, context, target embedding))`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# The score of masked (padding) source positions before the attention softmax (the same
# constant as s2s_tensor::ops::MASK_VALUE).
MASK_VALUE = -1.0e9

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}
ATTENTIONS = ("bahdanau", "dot", "general")


class ConfigError(ValueError):
    """A model configuration this module cannot build."""


def model_config(config: dict) -> dict:
    """The `model` section of an s2s `config.json` (or the section itself), checked."""
    m = config.get("model", config)
    required = [
        "src_vocab", "tgt_vocab", "d_embed", "d_hidden", "d_decoder", "d_attention",
        "encoder_layers", "decoder_layers", "bidirectional", "cell", "attention", "dropout",
        "bridge",
    ]
    missing = [k for k in required if k not in m]
    if missing:
        raise ConfigError(f"model configuration lacks {', '.join(missing)}")
    if m["cell"] not in CELLS:
        raise ConfigError(f"cell {m['cell']!r} (expected gru or lstm)")
    if m["attention"] not in ATTENTIONS:
        raise ConfigError(f"attention {m['attention']!r} (expected {', '.join(ATTENTIONS)})")
    if m["encoder_layers"] < 1 or m["decoder_layers"] < 1:
        raise ConfigError("encoder and decoder need at least one layer each")
    d_memory = m["d_hidden"] * (2 if m["bidirectional"] else 1)
    if m["attention"] == "dot" and m["d_decoder"] != d_memory:
        raise ConfigError(
            f"dot attention needs d_decoder ({m['d_decoder']}) == encoder output size ({d_memory})"
        )
    return m


class Memory:
    """The encoder outputs of a batch, prepared for attention."""

    def __init__(self, outputs: torch.Tensor, keys: torch.Tensor, valid: torch.Tensor):
        self.outputs = outputs  # [batch, src_len, d_memory], zero at padding
        self.keys = keys  # [batch, src_len, d_key]: projected once (Bahdanau, general)
        self.valid = valid  # [batch, src_len] bool, False at padding

    def select(self, rows: torch.Tensor) -> "Memory":
        """The memory of the given rows (beam search)."""
        return Memory(self.outputs[rows], self.keys[rows], self.valid[rows])


class Encoder(nn.Module):
    def __init__(self, m: dict):
        super().__init__()
        self.embedding = nn.Embedding(m["src_vocab"], m["d_embed"])
        self.rnn = CELLS[m["cell"]](
            m["d_embed"],
            m["d_hidden"],
            num_layers=m["encoder_layers"],
            bidirectional=m["bidirectional"],
            dropout=m["dropout"] if m["encoder_layers"] > 1 else 0.0,
            batch_first=True,
        )
        self.dropout = nn.Dropout(m["dropout"])


class Attention(nn.Module):
    def __init__(self, m: dict, d_memory: int):
        super().__init__()
        self.kind = m["attention"]
        if self.kind == "bahdanau":
            self.query = nn.Linear(m["d_decoder"], m["d_attention"], bias=False)
            self.key = nn.Linear(d_memory, m["d_attention"])
            self.score = nn.Linear(m["d_attention"], 1, bias=False)
        elif self.kind == "general":
            self.key = nn.Linear(d_memory, m["d_decoder"], bias=False)

    def keys(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs if self.kind == "dot" else self.key(outputs)

    def weights(self, query: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Attention weights [batch, src_len] of the query [batch, d_decoder]."""
        if self.kind == "bahdanau":
            hidden = torch.tanh(memory.keys + self.query(query).unsqueeze(1))
            scores = self.score(hidden).squeeze(2)
        else:
            scores = torch.bmm(memory.keys, query.unsqueeze(2)).squeeze(2)
        return torch.softmax(scores.masked_fill(~memory.valid, MASK_VALUE), dim=1)


class Decoder(nn.Module):
    """Target embeddings and a stack of `nn.GRUCell` / `nn.LSTMCell` layers (OpenNMT-py's
    stacked decoder cells), the first over `[embedding; context]`, dropout between layers."""

    def __init__(self, m: dict, d_memory: int):
        super().__init__()
        cell = nn.GRUCell if m["cell"] == "gru" else nn.LSTMCell
        self.embedding = nn.Embedding(m["tgt_vocab"], m["d_embed"])
        self.layers = nn.ModuleList(
            cell(m["d_embed"] + d_memory if k == 0 else m["d_decoder"], m["d_decoder"])
            for k in range(m["decoder_layers"])
        )
        self.dropout = nn.Dropout(m["dropout"])

    def forward(self, x: torch.Tensor, state: list):
        """One step of every layer from the first layer's input; returns the last layer's
        output and the new state (a list with one entry per layer: h, or (h, c))."""
        new = []
        for k, (layer, s) in enumerate(zip(self.layers, state)):
            if k > 0:
                x = self.dropout(x)
            s = layer(x, s)
            new.append(s)
            x = s if isinstance(s, torch.Tensor) else s[0]
        return x, new


class Seq2Seq(nn.Module):
    """The model of an s2s `config.json` (its `model` section, or the whole file)."""

    def __init__(self, config: dict):
        super().__init__()
        m = model_config(config)
        self.config = dict(m)
        self.cell = m["cell"]
        self.decoder_layers = m["decoder_layers"]
        self.d_decoder = m["d_decoder"]
        d_memory = m["d_hidden"] * (2 if m["bidirectional"] else 1)
        self.encoder = Encoder(m)
        if m["bridge"]:
            self.bridge_h = nn.Linear(d_memory, m["d_decoder"] * m["decoder_layers"])
            if self.cell == "lstm":
                self.bridge_c = nn.Linear(d_memory, m["d_decoder"] * m["decoder_layers"])
        self.attention = Attention(m, d_memory)
        self.decoder = Decoder(m, d_memory)
        self.output = nn.Linear(m["d_decoder"] + d_memory + m["d_embed"], m["tgt_vocab"])
        self.dropout = nn.Dropout(m["dropout"])

    # The decoder state is a list with one entry per layer: h [batch, d_decoder] for GRU,
    # (h, c) for LSTM.
    def _query(self, state) -> torch.Tensor:
        last = state[-1]
        return last if self.cell == "gru" else last[0]

    def _bridge(self, linear: nn.Linear, final: torch.Tensor) -> list:
        """The initial decoder states, one [batch, d_decoder] per layer, from the final
        states of the encoder's last layer ([layers * directions, batch, d_hidden])."""
        directions = 2 if self.config["bidirectional"] else 1
        last = torch.cat(list(final[-directions:]), dim=1)
        return list(torch.tanh(linear(last)).chunk(self.decoder_layers, dim=1))

    def encode(self, source: torch.Tensor, lengths: torch.Tensor):
        """Encodes a padded batch: source [batch, src_len] ids, lengths [batch] (CPU int64).
        Returns the memory and the decoder's initial state."""
        embedded = self.encoder.dropout(self.encoder.embedding(source))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        packed_out, final = self.encoder.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True, total_length=source.size(1))
        batch = source.size(0)
        if hasattr(self, "bridge_h"):
            h_n = final if self.cell == "gru" else final[0]
            hs = self._bridge(self.bridge_h, h_n)
            state = hs if self.cell == "gru" else list(zip(hs, self._bridge(self.bridge_c, final[1])))
        else:
            zero = outputs.new_zeros(batch, self.d_decoder)
            state = [zero if self.cell == "gru" else (zero, zero) for _ in range(self.decoder_layers)]
        positions = torch.arange(source.size(1), device=source.device)
        valid = positions.unsqueeze(0) < lengths.to(source.device).unsqueeze(1)
        return Memory(outputs, self.attention.keys(outputs), valid), state

    def _advance(self, embedded: torch.Tensor, state, memory: Memory):
        """One decoder step from embedded tokens [batch, d_embed]: output, context, state,
        attention weights."""
        weights = self.attention.weights(self._query(state), memory)
        context = torch.bmm(weights.unsqueeze(1), memory.outputs).squeeze(1)
        out, state = self.decoder(torch.cat([embedded, context], dim=1), state)
        return out, context, state, weights

    def forward(self, source, lengths, target_input) -> torch.Tensor:
        """Teacher-forced logits [batch, tgt_len, tgt_vocab] for `<sos> y1 .. yn` inputs."""
        memory, state = self.encode(source, lengths)
        embedded = self.dropout(self.decoder.embedding(target_input))
        outputs, contexts = [], []
        for t in range(target_input.size(1)):
            h, context, state, _ = self._advance(embedded[:, t], state, memory)
            outputs.append(h)
            contexts.append(context)
        features = torch.cat([torch.stack(outputs, 1), torch.stack(contexts, 1), embedded], dim=2)
        return self.output(features)

    def step(self, tokens: torch.Tensor, state, memory: Memory):
        """One decoding step: previous tokens [batch] -> logits [batch, tgt_vocab], the new
        state and the attention weights [batch, src_len]."""
        embedded = self.dropout(self.decoder.embedding(tokens))
        h, context, state, weights = self._advance(embedded, state, memory)
        return self.output(torch.cat([h, context, embedded], dim=1)), state, weights

    @staticmethod
    def select_state(state: list, rows: torch.Tensor) -> list:
        """The decoder state of the given rows."""
        return [s[rows] if isinstance(s, torch.Tensor) else (s[0][rows], s[1][rows]) for s in state]


def log_probs(logits: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(logits, dim=-1)
