//! A [`Seq2Seq`]'s weights under PyTorch's names and layouts, and as a safetensors file.
//!
//! The names are those of the reference PyTorch module (`python/s2s_reference`), which builds
//! the model from PyTorch's own pieces: `nn.Embedding` (`weight [vocab, d_embed]`), an
//! `nn.GRU` / `nn.LSTM` encoder (`weight_ih_l{k}[_reverse] [gates * hidden, d_in]`,
//! `weight_hh_l{k}[_reverse] [gates * hidden, hidden]`, `bias_ih_l{k}`, `bias_hh_l{k}`, gate
//! order `r z n` / `i f g o`), a decoder of `nn.GRUCell` / `nn.LSTMCell` layers stepped one
//! token at a time (`layers.{k}.weight_ih`, ..., as OpenNMT-py's stacked decoder cells) and
//! `nn.Linear` (`weight [out, in]`, `bias [out]`). s2s stores its 2-D weights as `[in,
//! out]` (`x @ w`), so those are transposed on the way out and back; the gate blocks need no
//! reordering. docs/model-format.md has the table of every name.
//!
//! [`named_tensors`] and [`from_named_tensors`] convert; [`to_safetensors`] and
//! [`from_safetensors`] add the file format (little-endian `F32` tensors).

use crate::model::{Seq2Seq, Seq2SeqConfig};
use crate::rnn::RnnLayer;
use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::Linear;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use std::collections::BTreeMap;

/// One weight in PyTorch's layout: row-major `values` of `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// Shape, PyTorch's.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

/// Why a set of named tensors does not make a model.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WeightsError {
    /// A weight the configuration needs is not there.
    #[error("tensor {name} {expected:?} is missing")]
    Missing {
        /// Its name.
        name: String,
        /// The shape the configuration gives it.
        expected: Vec<usize>,
    },
    /// A tensor the configuration has no place for.
    #[error("tensor {name} {shape:?} is not part of this model")]
    Unexpected {
        /// Its name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A tensor whose shape differs from the configuration's.
    #[error("tensor {name} has shape {found:?}, the configuration gives {expected:?}")]
    Shape {
        /// Its name.
        name: String,
        /// The configuration's shape.
        expected: Vec<usize>,
        /// The tensor's shape.
        found: Vec<usize>,
    },
    /// Not a safetensors file, or one with a tensor that is not `F32`.
    #[error("{0}")]
    Format(String),
}

/// Where a named tensor lives in the model.
enum Slot<'a, B: Backend> {
    /// A 2-D weight, stored transposed when `transpose` is set.
    Matrix(&'a mut Param<Tensor<B, 2>>, bool),
    /// A 1-D bias.
    Vector(&'a mut Param<Tensor<B, 1>>),
}

/// Every weight of `model` under its PyTorch name, in a fixed order.
fn slots<B: Backend>(model: &mut Seq2Seq<B>) -> Vec<(String, Slot<'_, B>)> {
    let mut out = Vec::new();
    let encoder = &mut model.encoder;
    out.push((
        "encoder.embedding.weight".to_string(),
        Slot::Matrix(&mut encoder.embedding.weight, false),
    ));
    for (k, layer) in encoder.forward_layers.iter_mut().enumerate() {
        rnn_slots(&mut out, |w| format!("encoder.rnn.{w}_l{k}"), layer);
    }
    for (k, layer) in encoder.backward_layers.iter_mut().enumerate() {
        rnn_slots(&mut out, |w| format!("encoder.rnn.{w}_l{k}_reverse"), layer);
    }
    if let Some(bridge) = model.bridge_h.as_mut() {
        linear_slots(&mut out, "bridge_h", bridge);
    }
    if let Some(bridge) = model.bridge_c.as_mut() {
        linear_slots(&mut out, "bridge_c", bridge);
    }
    let attention = &mut model.attention;
    for (name, linear) in [
        ("attention.query", attention.query.as_mut()),
        ("attention.key", attention.key.as_mut()),
        ("attention.score", attention.score.as_mut()),
    ] {
        if let Some(linear) = linear {
            linear_slots(&mut out, name, linear);
        }
    }
    out.push((
        "decoder.embedding.weight".to_string(),
        Slot::Matrix(&mut model.embedding.weight, false),
    ));
    for (k, layer) in model.decoder_layers.iter_mut().enumerate() {
        rnn_slots(&mut out, |w| format!("decoder.layers.{k}.{w}"), layer);
    }
    linear_slots(&mut out, "output", &mut model.output);
    out
}

/// A recurrent layer's four weights, `name("weight_ih")` and so on.
fn rnn_slots<'a, B: Backend>(
    out: &mut Vec<(String, Slot<'a, B>)>,
    name: impl Fn(&str) -> String,
    layer: &'a mut RnnLayer<B>,
) {
    out.push((name("weight_ih"), Slot::Matrix(&mut layer.weight_ih, true)));
    out.push((name("weight_hh"), Slot::Matrix(&mut layer.weight_hh, true)));
    out.push((name("bias_ih"), Slot::Vector(&mut layer.bias_ih)));
    out.push((name("bias_hh"), Slot::Vector(&mut layer.bias_hh)));
}

fn linear_slots<'a, B: Backend>(
    out: &mut Vec<(String, Slot<'a, B>)>,
    prefix: &str,
    linear: &'a mut Linear<B>,
) {
    out.push((
        format!("{prefix}.weight"),
        Slot::Matrix(&mut linear.weight, true),
    ));
    if let Some(bias) = linear.bias.as_mut() {
        out.push((format!("{prefix}.bias"), Slot::Vector(bias)));
    }
}

impl<B: Backend> Slot<'_, B> {
    /// The weight in PyTorch's layout.
    fn read(&self) -> NamedTensor {
        let (data, transpose) = match self {
            Slot::Matrix(p, transpose) => (p.val().into_data(), *transpose),
            Slot::Vector(p) => (p.val().into_data(), false),
        };
        let shape = data.shape.to_vec();
        let values = data.convert::<f32>().to_vec().expect("float weights");
        match transpose {
            true => NamedTensor {
                values: transposed(&values, shape[0], shape[1]),
                shape: vec![shape[1], shape[0]],
            },
            false => NamedTensor { shape, values },
        }
    }

    /// The shape the weight has in PyTorch's layout.
    fn shape(&self) -> Vec<usize> {
        match self {
            Slot::Matrix(p, transpose) => {
                let [a, b] = p.dims();
                if *transpose {
                    vec![b, a]
                } else {
                    vec![a, b]
                }
            }
            Slot::Vector(p) => p.dims().to_vec(),
        }
    }

    /// Replaces the weight with `t` (PyTorch's layout, shape already checked).
    fn write(self, t: NamedTensor, device: &B::Device) {
        match self {
            Slot::Matrix(p, transpose) => {
                let (rows, cols) = (t.shape[0], t.shape[1]);
                let data = match transpose {
                    true => TensorData::new(transposed(&t.values, rows, cols), [cols, rows]),
                    false => TensorData::new(t.values, [rows, cols]),
                };
                *p = Param::from_tensor(Tensor::from_data(data, device));
            }
            Slot::Vector(p) => {
                let data = TensorData::new(t.values, t.shape);
                *p = Param::from_tensor(Tensor::from_data(data, device));
            }
        }
    }
}

/// The row-major `[cols, rows]` transpose of a row-major `[rows, cols]` matrix. (Done on the
/// host, so that the stored weight is a plain contiguous tensor, as one read from a file.)
fn transposed(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Reads (and so initialises) every parameter it visits.
struct Initialise;

impl<B: Backend> ModuleVisitor<B> for Initialise {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Every weight of `model` under its PyTorch name, in PyTorch's layout.
pub fn named_tensors<B: Backend>(model: &Seq2Seq<B>) -> BTreeMap<String, NamedTensor> {
    // Burn initialises parameters lazily, and a clone of a parameter not read yet draws its
    // own values: read every parameter of `model` first, so that the clone holds them.
    model.visit(&mut Initialise);
    let mut model = model.clone();
    slots(&mut model)
        .into_iter()
        .map(|(name, slot)| (name, slot.read()))
        .collect()
}

/// The model of `config` with the given weights (PyTorch's names and layouts). Every weight
/// the configuration needs must be there with its shape, and nothing else.
pub fn from_named_tensors<B: Backend>(
    config: &Seq2SeqConfig,
    mut tensors: BTreeMap<String, NamedTensor>,
    device: &B::Device,
) -> Result<Seq2Seq<B>, WeightsError> {
    let mut model = config.init::<B>(device);
    let mut missing = None;
    for (name, slot) in slots(&mut model) {
        let expected = slot.shape();
        match tensors.remove(&name) {
            None => {
                missing.get_or_insert(WeightsError::Missing { name, expected });
            }
            Some(t) if t.shape != expected => {
                return Err(WeightsError::Shape {
                    name,
                    expected,
                    found: t.shape,
                })
            }
            Some(t) => slot.write(t, device),
        }
    }
    if let Some((name, t)) = tensors.into_iter().next() {
        return Err(WeightsError::Unexpected {
            name,
            shape: t.shape,
        });
    }
    match missing {
        Some(e) => Err(e),
        None => Ok(model),
    }
}

/// The metadata s2s puts in the header of its safetensors files: `format` `pt` (what
/// Hugging Face's loaders expect of PyTorch weights). One entry only: safetensors writes the
/// entries in a `HashMap`'s order, and the same weights must give the same bytes.
pub fn file_metadata() -> std::collections::HashMap<String, String> {
    std::collections::HashMap::from([("format".to_string(), "pt".to_string())])
}

/// The weights as a safetensors file (`F32`, little-endian), with `metadata` in its header.
pub fn to_safetensors(
    tensors: &BTreeMap<String, NamedTensor>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>, WeightsError> {
    let bytes: Vec<(&String, Vec<u8>, &Vec<usize>)> = tensors
        .iter()
        .map(|(name, t)| {
            let bytes = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name, bytes, &t.shape)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, data, shape)| {
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.to_vec(),
                data.as_slice(),
            )
            .map(|v| (name.as_str(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| WeightsError::Format(e.to_string()))?;
    safetensors::serialize(views, metadata).map_err(|e| WeightsError::Format(e.to_string()))
}

/// The tensors of a safetensors file; every tensor must be `F32`.
pub fn from_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, NamedTensor>, WeightsError> {
    let file = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| WeightsError::Format(format!("not a safetensors file: {e}")))?;
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(WeightsError::Format(format!(
                    "tensor {name} is {:?}; s2s reads F32 weights",
                    view.dtype()
                )));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let shape = view.shape().to_vec();
            Ok((name, NamedTensor { shape, values }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AttentionKind, CellKind};
    use s2s_tensor::backend::DefaultBackend as B;
    use s2s_tensor::ops;

    fn config(
        cell: CellKind,
        attention: AttentionKind,
        layers: usize,
        bidirectional: bool,
        bridge: bool,
    ) -> Seq2SeqConfig {
        let d_memory = if bidirectional { 16 } else { 8 };
        Seq2SeqConfig::new(11, 9)
            .with_d_embed(5)
            .with_d_hidden(8)
            .with_d_decoder(if attention == AttentionKind::Dot {
                d_memory
            } else {
                12
            })
            .with_d_attention(7)
            .with_cell(cell)
            .with_attention(attention)
            .with_encoder_layers(layers)
            .with_decoder_layers(layers)
            .with_bidirectional(bidirectional)
            .with_bridge(bridge)
    }

    fn logits(model: &Seq2Seq<B>) -> Vec<f32> {
        let device = Default::default();
        let src = ops::id_matrix::<B>(&[vec![4, 5, 6], vec![7, 8, 0]], 3, &device);
        let tgt = ops::id_matrix::<B>(&[vec![1, 4, 5], vec![1, 7, 0]], 3, &device);
        ops::to_vec_f32(model.forward(src, &[3, 2], tgt))
    }

    /// Every configuration goes to PyTorch's names and back, through a safetensors file,
    /// to the same weights and the same logits; the names are the documented ones.
    #[test]
    fn round_trips_through_safetensors() {
        let device = Default::default();
        let settings = [
            (CellKind::Gru, AttentionKind::Bahdanau, 1, true, true),
            (CellKind::Lstm, AttentionKind::Bahdanau, 2, true, true),
            (CellKind::Lstm, AttentionKind::General, 2, false, true),
            (CellKind::Gru, AttentionKind::Dot, 1, true, false),
            (CellKind::Lstm, AttentionKind::Dot, 2, false, false),
        ];
        for (cell, attention, layers, bi, bridge) in settings {
            let what = format!("{cell:?} {attention:?} {layers} layers bi {bi} bridge {bridge}");
            let config = config(cell, attention, layers, bi, bridge);
            let model = s2s_tensor::backend::seeded_module::<B, _>(&device, 3, || {
                config.init::<B>(&device)
            });
            let tensors = named_tensors(&model);
            let bytes = to_safetensors(&tensors, None).unwrap();
            let read = from_safetensors(&bytes).unwrap();
            assert_eq!(read, tensors, "{what}");
            let back = from_named_tensors::<B>(&config, read, &device).unwrap();
            assert_eq!(named_tensors(&back), tensors, "{what}");
            assert_eq!(logits(&back), logits(&model), "{what}");
            let gates = if cell == CellKind::Lstm { 4 } else { 3 };
            let rnn = |prefix: &str, suffix: &str| {
                ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
                    .map(|w| format!("{prefix}.{w}_{suffix}"))
            };
            let mut want: Vec<String> = vec!["encoder.embedding.weight".into()];
            for k in 0..layers {
                want.extend(rnn("encoder.rnn", &format!("l{k}")));
                if bi {
                    want.extend(rnn("encoder.rnn", &format!("l{k}_reverse")));
                }
                want.extend(
                    ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
                        .map(|w| format!("decoder.layers.{k}.{w}")),
                );
            }
            if bridge {
                want.extend(["bridge_h.weight".into(), "bridge_h.bias".into()]);
                if cell == CellKind::Lstm {
                    want.extend(["bridge_c.weight".into(), "bridge_c.bias".into()]);
                }
            }
            match attention {
                AttentionKind::Bahdanau => want.extend(
                    ["query.weight", "key.weight", "key.bias", "score.weight"]
                        .map(|n| format!("attention.{n}")),
                ),
                AttentionKind::General => want.push("attention.key.weight".into()),
                AttentionKind::Dot => {}
            }
            want.extend(
                ["decoder.embedding.weight", "output.weight", "output.bias"].map(String::from),
            );
            want.sort();
            assert_eq!(tensors.keys().cloned().collect::<Vec<_>>(), want, "{what}");
            let d_memory = if bi { 16 } else { 8 };
            let d_decoder = if attention == AttentionKind::Dot {
                d_memory
            } else {
                12
            };
            assert_eq!(tensors["encoder.rnn.weight_ih_l0"].shape, [gates * 8, 5]);
            assert_eq!(
                tensors["decoder.layers.0.weight_ih"].shape,
                [gates * d_decoder, 5 + d_memory]
            );
            assert_eq!(
                tensors["output.weight"].shape,
                [9, d_decoder + d_memory + 5]
            );
        }
    }

    /// A 2-D weight is PyTorch's `[out, in]`: the transposed s2s weight.
    #[test]
    fn weights_are_transposed_to_pytorch_layout() {
        let device = Default::default();
        let model =
            config(CellKind::Gru, AttentionKind::Bahdanau, 1, true, true).init::<B>(&device);
        let tensors = named_tensors(&model);
        let w = &tensors["decoder.layers.0.weight_hh"];
        let ours = ops::to_vec_f32(model.decoder_layers[0].weight_hh.val());
        // s2s: [D, 3D] row-major; PyTorch: [3D, D]. Element (i, j) of ours is (j, i) of theirs.
        let (d, g) = (12, 36);
        assert_eq!(w.shape, [g, d]);
        for i in 0..d {
            for j in 0..g {
                assert_eq!(ours[i * g + j], w.values[j * d + i]);
            }
        }
    }

    /// Missing, unexpected and mis-shaped tensors, truncated files and other dtypes are
    /// errors that name the tensor.
    #[test]
    fn bad_weights_are_named() {
        let device = Default::default();
        let config = config(CellKind::Gru, AttentionKind::Bahdanau, 1, true, true);
        let tensors = named_tensors(&config.init::<B>(&device));
        let mut t = tensors.clone();
        t.remove("output.bias");
        let err = from_named_tensors::<B>(&config, t, &device).unwrap_err();
        assert!(
            matches!(&err, WeightsError::Missing { name, .. } if name == "output.bias"),
            "{err}"
        );
        let mut t = tensors.clone();
        t.insert(
            "decoder.layers.1.weight_ih".into(),
            tensors["output.bias"].clone(),
        );
        let err = from_named_tensors::<B>(&config, t, &device).unwrap_err();
        assert!(
            err.to_string().contains("decoder.layers.1.weight_ih"),
            "{err}"
        );
        let mut t = tensors.clone();
        let w = t.get_mut("attention.key.weight").unwrap();
        w.shape.reverse();
        let err = from_named_tensors::<B>(&config, t, &device).unwrap_err();
        assert!(
            matches!(&err, WeightsError::Shape { name, .. } if name == "attention.key.weight"),
            "{err}"
        );
        let bytes = to_safetensors(&tensors, None).unwrap();
        let err = from_safetensors(&bytes[..bytes.len() / 2]).unwrap_err();
        assert!(matches!(err, WeightsError::Format(_)), "{err}");
        assert!(from_safetensors(b"not a file").is_err());
        let half = [0u8; 4];
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, vec![2], &half).unwrap();
        let bytes = safetensors::serialize([("output.bias", view)], None).unwrap();
        let err = from_safetensors(&bytes).unwrap_err();
        assert!(
            err.to_string().contains("output.bias") && err.to_string().contains("F16"),
            "{err}"
        );
    }
}
