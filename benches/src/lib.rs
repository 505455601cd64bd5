//! The backend comparison benchmark of `shared/docs/benchmark.md`: the reference
//! "g2p-bench" model, the CMUdict words it is measured on, and the export of a model, its
//! batches and reference outputs for the PyTorch script (`benches/pytorch_g2p.py`) that runs
//! the same model on the same data.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{backend::Backend, Tensor};
use s2s_data::corpus::{read_cmudict, CmudictOptions};
use s2s_data::Splits;
use s2s_nn::{CellKind, Seq2SeqConfig};
use std::path::PathBuf;

/// The workspace root.
pub fn project_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// CMUdict with stress removed, split as the CLI does.
pub fn cmudict() -> Splits {
    let path = project_root().join("data/cmudict/cmudict.dict");
    read_cmudict(&path, CmudictOptions::default()).expect("the repository's CMUdict reads")
}

/// The benchmark model: embeddings 64, bidirectional encoder 256 per direction, Bahdanau
/// attention 256, decoder 256.
pub fn bench_model(src_vocab: usize, tgt_vocab: usize, cell: CellKind) -> Seq2SeqConfig {
    Seq2SeqConfig::new(src_vocab, tgt_vocab)
        .with_d_embed(64)
        .with_d_hidden(256)
        .with_d_decoder(256)
        .with_d_attention(256)
        .with_cell(cell)
}

/// One float parameter of a module: its dotted path (`encoder.forward_layers.0.weight_ih`),
/// shape and values in row-major order.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NamedParam {
    /// Dotted path of field names from the root module.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

struct Collector {
    path: Vec<String>,
    params: Vec<NamedParam>,
}

impl<B: Backend> ModuleVisitor<B> for Collector {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        self.params.push(NamedParam {
            name: self.path.join("."),
            shape: tensor.dims().to_vec(),
            data: tensor
                .into_data()
                .convert::<f32>()
                .to_vec()
                .expect("float parameter converts to f32"),
        });
    }
}

/// Every float parameter of `module`, with its path.
pub fn named_params<B: Backend, M: Module<B>>(module: &M) -> Vec<NamedParam> {
    let mut c = Collector {
        path: Vec::new(),
        params: Vec::new(),
    };
    module.visit(&mut c);
    c.params
}

/// Peak resident set size of this process in MiB (`VmHWM`, what `/usr/bin/time -v` reports
/// as the maximum resident set size), or `None` where `/proc` is not available.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
