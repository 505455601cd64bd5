use thiserror::Error;

/// Errors from computing a metric. None of them is raised for odd *text*: every string is a
/// valid hypothesis or reference; only the shape of the input and the configuration are checked.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetricsError {
    /// No reference stream (or, for a single segment, no reference) was given.
    #[error("no references were given: at least one reference stream is needed")]
    NoReferences,
    /// A reference stream does not have exactly one line per hypothesis.
    #[error(
        "reference stream {stream} (0-based) has {found} lines but there are {expected} \
         hypotheses: every reference stream needs exactly one line per hypothesis"
    )]
    LengthMismatch {
        /// Index of the offending reference stream (0-based).
        stream: usize,
        /// Number of hypotheses.
        expected: usize,
        /// Number of lines in that reference stream.
        found: usize,
    },
    /// References given per segment ([`crate::BleuConfig::corpus_score_grouped`]) are not one
    /// list per hypothesis.
    #[error(
        "{found} reference lists for {expected} hypotheses: every hypothesis needs its own \
         list of references"
    )]
    GroupCountMismatch {
        /// Number of hypotheses.
        expected: usize,
        /// Number of reference lists.
        found: usize,
    },
    /// A segment's list of references is empty.
    #[error("hypothesis {segment} (0-based) has no reference")]
    EmptyReferenceList {
        /// The segment.
        segment: usize,
    },
    /// The configuration cannot be used (for example an n-gram order of 0).
    #[error("invalid {metric} configuration: {reason}")]
    InvalidConfig {
        /// `"BLEU"` or `"chrF"`.
        metric: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Sufficient statistics do not fit the configuration they are scored with.
    #[error("{metric} statistics do not match the configuration: {reason}")]
    StatsMismatch {
        /// `"BLEU"` or `"chrF"`.
        metric: &'static str,
        /// What does not match.
        reason: String,
    },
    /// A tokenizer name that this crate does not implement.
    #[error("unknown BLEU tokenizer {0:?}: expected one of none, 13a, intl, char")]
    UnknownTokenizer(String),
}
