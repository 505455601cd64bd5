//! Tokenizers that split text into the symbols a vocabulary is built from.

use serde::{Deserialize, Serialize};

/// How a line of text is split into tokens and joined back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    /// One token per Unicode scalar value; whitespace is kept as a token.
    Chars,
    /// Tokens separated by runs of whitespace.
    Whitespace,
}

impl Tokenizer {
    /// Splits `text` into tokens.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        match self {
            Tokenizer::Chars => text.chars().map(String::from).collect(),
            Tokenizer::Whitespace => text.split_whitespace().map(String::from).collect(),
        }
    }

    /// Joins tokens back into text (the inverse of [`tokenize`](Self::tokenize) for
    /// normalised input).
    pub fn detokenize<S: AsRef<str>>(&self, tokens: &[S]) -> String {
        let sep = match self {
            Tokenizer::Chars => "",
            Tokenizer::Whitespace => " ",
        };
        tokens
            .iter()
            .map(|t| t.as_ref())
            .collect::<Vec<_>>()
            .join(sep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        assert_eq!(Tokenizer::Chars.tokenize("ab c"), vec!["a", "b", " ", "c"]);
        assert_eq!(
            Tokenizer::Chars.detokenize(&Tokenizer::Chars.tokenize("ab c")),
            "ab c"
        );
        let words = Tokenizer::Whitespace.tokenize("  HH  AH L  OW ");
        assert_eq!(words, vec!["HH", "AH", "L", "OW"]);
        assert_eq!(Tokenizer::Whitespace.detokenize(&words), "HH AH L OW");
    }
}
