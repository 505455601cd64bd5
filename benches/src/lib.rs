//! The backend comparison benchmark of `shared/docs/benchmark.md`: the reference
//! "g2p-bench" model, the CMUdict words it is measured on, and the export of a model, its
//! batches and reference outputs for the PyTorch script (`benches/pytorch_g2p.py`) that runs
//! the same model on the same data.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor};
use s2s_data::corpus::{read_cmudict, CmudictOptions};
use s2s_data::Splits;
use s2s_decode::StepDecoder;
use s2s_nn::{CellKind, DecoderState, Memory, Seq2Seq, Seq2SeqConfig};
use s2s_tensor::S2sBackend;
use std::path::PathBuf;

/// The workspace root.
pub fn project_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The Python of the project's virtualenv (`$S2S_VENV`, else `.venv`) when it can `import
/// torch`, for the tests that compare with PyTorch. Without one, `test` says so on stderr and
/// gets `None` (the test then passes without comparing), unless `S2S_REQUIRE_TORCH=1` (set by
/// `cargo xtask test` whenever it uses the virtualenv), which makes it panic.
pub fn torch_python(test: &str) -> Option<PathBuf> {
    let venv = match std::env::var_os("S2S_VENV") {
        Some(v) => PathBuf::from(v),
        None => project_root().join(".venv"),
    };
    let py = venv.join("bin/python");
    let works = std::process::Command::new(&py)
        .args(["-c", "import torch"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(py);
    }
    eprintln!(
        "{test}: NOT compared with PyTorch: no Python that can `import torch` in {}",
        venv.display()
    );
    if std::env::var_os("S2S_REQUIRE_TORCH").is_some_and(|v| v == "1") {
        panic!("S2S_REQUIRE_TORCH=1 but torch was not found");
    }
    None
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

/// The gradient of every float parameter of `module` in `grads`, with the parameter's path
/// and shape (as [`named_params`] lists the values).
///
/// # Panics
/// When a parameter has no gradient in `grads`.
pub fn named_gradients<AB: AutodiffBackend, M: Module<AB>>(
    module: &M,
    grads: &GradientsParams,
) -> Vec<NamedParam> {
    struct Grads<'a> {
        grads: &'a GradientsParams,
        path: Vec<String>,
        params: Vec<NamedParam>,
    }
    impl<AB: AutodiffBackend> ModuleVisitor<AB> for Grads<'_> {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
            let name = self.path.join(".");
            let grad = self
                .grads
                .get::<AB::InnerBackend, D>(param.id)
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            self.params.push(NamedParam {
                name,
                shape: grad.dims().to_vec(),
                data: s2s_tensor::ops::to_vec_f32(grad),
            });
        }
    }
    let mut c = Grads {
        grads,
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

/// A [`StepDecoder`] that runs a [`Seq2Seq`] model and counts the work it is asked for, so
/// that a decoding run can be turned into the floating-point operations of its matrix
/// products ([`DecodingWork::gemm_flops`]).
pub struct CountingDecoder<'a, B: Backend> {
    model: &'a Seq2Seq<B>,
    work: std::sync::Mutex<DecodingWork>,
}

/// What a decoding run asked of the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodingWork {
    /// Padded source positions encoded (`batch * src_len` summed over batches).
    pub source_positions: usize,
    /// Sources encoded (rows of the bridge).
    pub sources: usize,
    /// Decoding caches built (`s2s_nn::DecodingCache`, one per batch: the embedding table).
    pub tables: usize,
    /// Padded source positions projected into a decoding cache's values.
    pub value_positions: usize,
    /// Decoder rows advanced (`rows` summed over steps) without the decoding cache.
    pub row_steps: usize,
    /// Decoder rows times source positions attended (`rows * src_len` summed over steps)
    /// without the decoding cache.
    pub row_source_steps: usize,
    /// [`row_steps`](Self::row_steps) with the cache's values.
    pub value_row_steps: usize,
    /// [`row_source_steps`](Self::row_source_steps) with the cache's values.
    pub value_row_source_steps: usize,
}

impl<'a, B: Backend> CountingDecoder<'a, B> {
    /// Wraps a model; the counts start at zero.
    pub fn new(model: &'a Seq2Seq<B>) -> Self {
        CountingDecoder {
            model,
            work: Default::default(),
        }
    }

    /// The work counted so far.
    pub fn work(&self) -> DecodingWork {
        *self.work.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, f: impl FnOnce(&mut DecodingWork)) {
        f(&mut self.work.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl<B: S2sBackend> StepDecoder<B> for CountingDecoder<'_, B> {
    type Memory = Memory<B>;
    type State = DecoderState<B>;

    fn start(&self, source: Tensor<B, 2, Int>, lengths: &[usize]) -> (Memory<B>, DecoderState<B>) {
        let [batch, src_len] = source.dims();
        self.count(|w| {
            w.source_positions += batch * src_len;
            w.sources += batch;
        });
        StepDecoder::start(self.model, source, lengths)
    }

    fn step(
        &self,
        memory: &Memory<B>,
        tokens: Tensor<B, 1, Int>,
        state: DecoderState<B>,
    ) -> (Tensor<B, 2>, DecoderState<B>, Tensor<B, 2>) {
        let rows = tokens.dims()[0];
        let src_len = memory.outputs.dims()[1];
        let values = memory.has_cached_values();
        self.count(|w| {
            if values {
                w.value_row_steps += rows;
                w.value_row_source_steps += rows * src_len;
            } else {
                w.row_steps += rows;
                w.row_source_steps += rows * src_len;
            }
        });
        StepDecoder::step(self.model, memory, tokens, state)
    }

    fn select_rows(
        &self,
        memory: &Memory<B>,
        state: DecoderState<B>,
        indices: &[usize],
    ) -> (Memory<B>, DecoderState<B>) {
        let out = StepDecoder::select_rows(self.model, memory, state, indices);
        if memory.cache.is_none() && out.0.cache.is_some() {
            self.count(|w| w.tables += 1);
        }
        if !memory.has_cached_values() && out.0.has_cached_values() {
            let [rows, src_len, _] = memory.outputs.dims();
            self.count(|w| w.value_positions += rows * src_len);
        }
        out
    }

    fn select_state_rows(&self, state: DecoderState<B>, indices: &[usize]) -> DecoderState<B> {
        StepDecoder::select_state_rows(self.model, state, indices)
    }
}

impl DecodingWork {
    /// Floating-point operations (2 per multiply-add) of the matrix products this work
    /// needs in a model of `config` with additive attention, decoded as s2s does: encoder
    /// input projections and recurrent products of every layer and direction, attention keys,
    /// bridge, and per decoder row and step the first layer's input projection (embedding and
    /// context), recurrent products, attention query, scores and context, and the output
    /// layer. With the decoding cache (`s2s_nn::DecodingCache`, built once a strategy repeats
    /// rows): its embedding table, its values for every source position, and per row and step
    /// the mix of the values in place of the context and the products with it and with the
    /// embedding. Element-wise work is not counted: this is the least the implementation
    /// does.
    pub fn gemm_flops(&self, config: &Seq2SeqConfig) -> f64 {
        let c = config;
        let gates = c.cell.gates() as f64;
        let (e, h, d, a) = (
            c.d_embed as f64,
            c.d_hidden as f64,
            c.d_decoder as f64,
            c.d_attention as f64,
        );
        let dirs = if c.bidirectional { 2.0 } else { 1.0 };
        let m = dirs * h;
        let mut per_position = 0.0;
        for layer in 0..c.encoder_layers {
            let input = if layer == 0 { e } else { m };
            per_position += dirs * 2.0 * (input + h) * gates * h;
        }
        let v = c.tgt_vocab as f64;
        per_position += 2.0 * m * a;
        let per_value_position = 2.0 * m * (gates * d + v);
        let per_table = 2.0 * v * e * (gates * d + v);
        // One bridge for the hidden states, and one more for LSTM cells.
        let bridges = match (c.bridge, c.cell) {
            (false, _) => 0.0,
            (true, CellKind::Gru) => 1.0,
            (true, CellKind::Lstm) => 2.0,
        };
        let per_source = bridges * 2.0 * m * d * c.decoder_layers as f64;
        // Recurrent products, deeper layers, query and the output layer's share of the state.
        let mut value_row_step = 2.0 * d * gates * d;
        value_row_step += (c.decoder_layers as f64 - 1.0) * 2.0 * (d + d) * gates * d;
        value_row_step += 2.0 * d * a + 2.0 * d * v;
        let per_row_step = value_row_step + 2.0 * (e + m) * (gates * d + v);
        let per_row_source = 2.0 * (a + m);
        let value_row_source = 2.0 * (a + gates * d + v);
        per_position * self.source_positions as f64
            + per_value_position * self.value_positions as f64
            + per_table * self.tables as f64
            + value_row_step * self.value_row_steps as f64
            + value_row_source * self.value_row_source_steps as f64
            + per_source * self.sources as f64
            + per_row_step * self.row_steps as f64
            + per_row_source * self.row_source_steps as f64
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use super::*;
    use s2s_decode::{decode_all, BeamSearch, Greedy, Hypothesis, Strategy};
    use s2s_tensor::backend::Flex;

    /// A small GRU model: everything 8 wide, 10 target tokens.
    fn tiny_config() -> Seq2SeqConfig {
        bench_model(12, 10, CellKind::Gru)
            .with_d_embed(8)
            .with_d_hidden(8)
            .with_d_decoder(8)
            .with_d_attention(8)
    }

    /// Decodes `sources` in one batch through a [`CountingDecoder`].
    fn count<S: for<'m> Strategy<Flex, CountingDecoder<'m, Flex>>>(
        model: &Seq2Seq<Flex>,
        strategy: &S,
        sources: &[Vec<u32>],
    ) -> (DecodingWork, Vec<Vec<Hypothesis>>) {
        let counter = CountingDecoder::new(model);
        let batch = s2s_data::BatchSize::Sentences(sources.len());
        let out = decode_all(&counter, strategy, sources, batch, &Default::default());
        (counter.work(), out)
    }

    /// Greedy decoding asks for one row per output token plus `<eos>`; beam search for one
    /// row per sentence at the first step and at most `beam` later; every step attends over
    /// the batch's padded source length.
    #[test]
    fn counts_follow_the_decoding() {
        // Seeded: some random weights end every beam at the first step, and the test would
        // fail now and then.
        let device = Default::default();
        let model = s2s_tensor::backend::seeded::<Flex, _>(&device, 1, || {
            tiny_config().init::<Flex>(&device)
        });
        let sources = vec![vec![4u32, 5, 6], vec![7u32, 8]];
        let (work, out) = count(&model, &Greedy::new(6), &sources);
        let produced: usize = out.iter().map(|h| h[0].tokens.len() + 1).sum();
        assert_eq!(work.sources, 2);
        // Greedy never repeats rows, so it never builds the cache; beam search does.
        assert_eq!(
            (work.tables, work.value_positions, work.value_row_steps),
            (0, 0, 0)
        );
        assert_eq!(work.source_positions, 2 * 3);
        assert_eq!(work.row_steps, produced);
        let (beam_work, _) = count(&model, &BeamSearch::new(3, 6), &sources);
        let rows = beam_work.row_steps + beam_work.value_row_steps;
        assert!((2..=2 + 3 * 2 * 6).contains(&rows));
        assert_eq!(
            beam_work.row_source_steps + beam_work.value_row_source_steps,
            3 * (beam_work.row_steps + beam_work.value_row_steps)
        );
        assert_eq!((beam_work.tables, beam_work.value_positions), (1, 2 * 3));
        assert!(beam_work.value_row_steps > 0);
    }

    /// The FLOP count of each kind of work, by hand for a small GRU model (8 wide, 3 gates,
    /// bidirectional encoder, 10 target tokens).
    #[test]
    fn gemm_flops_by_hand() {
        let config = tiny_config();
        let one = |f: fn(&mut DecodingWork)| {
            let mut w = DecodingWork::default();
            f(&mut w);
            w.gemm_flops(&config)
        };
        // Two directions x 2 x (input 8 + hidden 8) x 24 gate units, plus keys 2 x 16 x 8.
        assert_eq!(one(|w| w.source_positions = 1), 1536.0 + 256.0);
        // The bridge: 2 x 16 x 8.
        assert_eq!(one(|w| w.sources = 1), 256.0);
        // Input (8 + 16 + 8 wide) x 24, query 8 x 8, output (8 + 16 + 8) x 10.
        assert_eq!(one(|w| w.row_steps = 1), 1536.0 + 128.0 + 640.0);
        // Score (8) and context (16).
        assert_eq!(one(|w| w.row_source_steps = 1), 48.0);
        // The cache's embedding table 2 x 10 x 8 x (24 + 10), its values 2 x 16 x 34.
        assert_eq!(one(|w| w.tables = 1), 5440.0);
        assert_eq!(one(|w| w.value_positions = 1), 1088.0);
        // With the values: no context product; score and the values' mix.
        assert_eq!(one(|w| w.value_row_steps = 1), 384.0 + 128.0 + 160.0);
        assert_eq!(one(|w| w.value_row_source_steps = 1), 84.0);
        assert!(DecodingWork::default().gemm_flops(&config) == 0.0);
    }
}
