//! Shared setup for the s2s benchmarks: the reference "g2p-bench" model of
//! `shared/docs/benchmark.md` and the CMUdict words it is measured on.

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
