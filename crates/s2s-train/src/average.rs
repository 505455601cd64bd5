//! Checkpoint averaging (as Marian and fairseq's `average_checkpoints.py`): the element-wise
//! mean of the weights of several checkpoints of one model, usually the last saves of a run.

use crate::checkpoint::{codec_difference, model_folder, Checkpoint, CheckpointError};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};
use s2s_nn::Seq2Seq;
use serde_json::json;
use std::path::PathBuf;

/// Every float parameter of `model`, flattened, in visiting order.
fn flat_params<B: Backend>(model: &Seq2Seq<B>) -> Vec<Tensor<B, 1>> {
    struct Flat<B: Backend>(Vec<Tensor<B, 1>>);
    impl<B: Backend> ModuleVisitor<B> for Flat<B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let value = param.val();
            let n = value.shape().num_elements();
            self.0.push(value.reshape([n]));
        }
    }
    let mut flat = Flat(Vec::new());
    model.visit(&mut flat);
    flat.0
}

/// The model whose every weight is the mean of that weight in `models` (all of one
/// architecture), or `None` when `models` is empty. The sum runs in the order given.
///
/// # Panics
/// When the models' architectures differ; [`average_checkpoints`] checks that first.
pub fn average_models<B: Backend>(models: &[Seq2Seq<B>]) -> Option<Seq2Seq<B>> {
    let (first, rest) = models.split_first()?;
    let others: Vec<Vec<Tensor<B, 1>>> = rest.iter().map(flat_params).collect();
    struct Mean<B: Backend> {
        others: Vec<Vec<Tensor<B, 1>>>,
        index: usize,
        count: f32,
    }
    impl<B: Backend> ModuleMapper<B> for Mean<B> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            let (id, value, mapper) = param.consume();
            let shape = value.shape();
            let mut sum = value.reshape([shape.num_elements()]);
            for other in &self.others {
                sum = sum + other[self.index].clone();
            }
            self.index += 1;
            let mean = sum.div_scalar(self.count).reshape(shape);
            Param::from_mapped_value(id, mean, mapper)
        }
    }
    let mut mean = Mean {
        others,
        index: 0,
        count: models.len() as f32,
    };
    Some(first.clone().map(&mut mean))
}

/// Loads the checkpoints in `dirs` (model folders or run folders), checks that they share
/// the architecture, tokenizers and vocabularies, and returns their average, with the first
/// one's settings and `averaged_from` (the folders) in its summary.
pub fn average_checkpoints<B: Backend>(
    dirs: &[PathBuf],
    device: &B::Device,
) -> Result<Checkpoint<B>, CheckpointError> {
    let Some((first_dir, rest)) = dirs.split_first() else {
        return Err(CheckpointError::Invalid {
            path: PathBuf::new(),
            message: "averaging needs at least one model folder".into(),
        });
    };
    let first = Checkpoint::<B>::load(first_dir, device)?;
    let architecture = serde_json::to_value(&first.meta.model).expect("a config serialises");
    let mut models = vec![first.model.clone()];
    for dir in rest {
        let other = Checkpoint::<B>::load(dir, device)?;
        let refuse = |what: String| CheckpointError::Invalid {
            path: model_folder(dir),
            message: format!(
                "cannot be averaged with {}: {what}",
                model_folder(first_dir).display()
            ),
        };
        if serde_json::to_value(&other.meta.model).expect("a config serialises") != architecture {
            return Err(refuse(
                "its model settings differ (config.json's \"model\")".into(),
            ));
        }
        if let Some(what) = codec_difference(&first.codec, &other.codec) {
            return Err(refuse(what));
        }
        models.push(other.model);
    }
    let model = average_models(&models).expect("at least the first model");
    let mut meta = first.meta.clone();
    let from: Vec<String> = dirs
        .iter()
        .map(|d| model_folder(d).display().to_string())
        .collect();
    meta.summary = json!({ "averaged_from": from, "first": first.meta.summary });
    Ok(Checkpoint {
        meta,
        codec: first.codec,
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use s2s_nn::Seq2SeqConfig;
    use s2s_tensor::backend::{seeded_module, DefaultBackend as B};
    use s2s_tensor::ops::to_vec_f32;

    /// Every weight of the average is the mean of the models' weights, worked out in f64.
    #[test]
    fn every_weight_is_the_mean() {
        let device = Default::default();
        let config = Seq2SeqConfig::new(7, 6)
            .with_d_embed(3)
            .with_d_hidden(4)
            .with_d_decoder(5)
            .with_d_attention(2);
        let models: Vec<Seq2Seq<B>> = (1..=3)
            .map(|seed| seeded_module::<B, _>(&device, seed, || config.init(&device)))
            .collect();
        let mean = average_models(&models).unwrap();
        let got: Vec<Vec<f32>> = flat_params(&mean).into_iter().map(to_vec_f32).collect();
        let each: Vec<Vec<Vec<f32>>> = models
            .iter()
            .map(|m| flat_params(m).into_iter().map(to_vec_f32).collect())
            .collect();
        assert!(got.len() > 10);
        for (p, values) in got.iter().enumerate() {
            for (i, &v) in values.iter().enumerate() {
                let want: f64 = each.iter().map(|m| m[p][i] as f64).sum::<f64>() / 3.0;
                assert!(
                    (v as f64 - want).abs() <= 1e-6,
                    "parameter {p}[{i}]: {v} vs {want}"
                );
            }
            // The models differ, so the mean is none of them.
            assert_ne!(values, &each[0][p]);
        }
        assert!(average_models::<B>(&[]).is_none());
    }

    /// Checkpoints of other architectures are refused, naming the folder; nothing is
    /// averaged from an empty list.
    #[test]
    fn other_architectures_are_refused() {
        use crate::checkpoint::{CheckpointMeta, FORMAT};
        use s2s_data::{corpus::SyntheticTask, TextCodec, Tokenizer};
        let device = Default::default();
        let dir = tempfile::tempdir().unwrap();
        let pairs = SyntheticTask::Copy.generate(20, 1, 4, 5, 1);
        let codec = TextCodec::build(&pairs, Tokenizer::Chars, Tokenizer::Chars, 1);
        let save = |name: &str, hidden: usize| {
            let config = Seq2SeqConfig::new(codec.source_vocab.len(), codec.target_vocab.len())
                .with_d_embed(3)
                .with_d_hidden(hidden)
                .with_d_decoder(5)
                .with_d_attention(2);
            let path = dir.path().join(name);
            Checkpoint::<B> {
                meta: CheckpointMeta {
                    format: FORMAT,
                    task: "copy".into(),
                    model: config.clone(),
                    source_tokenizer: Tokenizer::Chars,
                    target_tokenizer: Tokenizer::Chars,
                    max_decode_len: 5,
                    summary: serde_json::Value::Null,
                    s2s_version: String::new(),
                },
                codec: codec.clone(),
                model: seeded_module::<B, _>(&device, hidden as u64, || config.init(&device)),
            }
            .save(&path)
            .unwrap();
            path
        };
        let (a, b, c) = (save("a", 4), save("b", 4), save("c", 6));
        let averaged = average_checkpoints::<B>(&[a.clone(), b], &device).unwrap();
        assert_eq!(
            averaged.meta.summary["averaged_from"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let err = average_checkpoints::<B>(&[a, c], &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/c") && err.contains("model settings differ"),
            "{err}"
        );
        assert!(average_checkpoints::<B>(&[], &device).is_err());
    }
}
