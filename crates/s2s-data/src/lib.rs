//! Data for sequence-to-sequence models: vocabularies, tokenizers, corpora and batching.
//!
//! - [`Vocab`]: token <-> id maps with the special tokens `<pad>` = 0, `<sos>`, `<eos>`, `<unk>`.
//! - [`Tokenizer`]: characters, whitespace-separated words, or BPE subwords ([`Subword`]).
//! - [`corpus`]: parallel TSV files (with errors that name file and line), CMUdict
//!   grapheme-to-phoneme data with a deterministic split, and synthetic tasks (copy, reverse,
//!   sort, double) for tests and examples.
//! - [`batch`]: dynamic padding, length-bucketed shuffled training batches and length-sorted
//!   inference batches whose results are put back in input order.
//!
//! ```
//! use s2s_data::{Tokenizer, Vocab};
//!
//! let tok = Tokenizer::Chars;
//! let vocab = Vocab::build([tok.tokenize("hello"), tok.tokenize("world")].iter(), 1);
//! let ids = vocab.encode(&tok.tokenize("held"));
//! assert_eq!(vocab.decode(&ids), vec!["h", "e", "l", "d"]);
//! assert_eq!(vocab.encode(&tok.tokenize("z")), vec![Vocab::UNK]);
//! ```

pub mod batch;
mod codec;
pub mod corpus;
mod error;
mod tokenize;
pub mod vectors;
mod vocab;

pub use batch::{BatchSize, InferenceBatch, TrainingBatch};
pub use codec::TextCodec;
pub use corpus::{Example, Pair, Reference, Splits};
pub use error::DataError;
pub use tokenize::{Subword, Tokenizer, WORD_MARK};
pub use vectors::{read_word_vectors, WordVectors};
pub use vocab::Vocab;
