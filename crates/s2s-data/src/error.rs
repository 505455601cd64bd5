//! Errors raised while reading and preparing data.

use std::path::PathBuf;

/// An error in input data. Every variant that comes from a file names the file and the
/// 1-based line number.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of the file is malformed.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },
    /// A file holds no usable data.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A vocabulary file could not be parsed.
    #[error("{path}: invalid vocabulary: {message}")]
    Vocab {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A subword tokenizer could not be trained or read.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}
