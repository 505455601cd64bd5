//! Tokenizers that split text into the symbols a vocabulary is built from: characters,
//! whitespace-separated words, or learned subwords (BPE, Hugging Face `tokenizers`).

use crate::DataError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Arc;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::{unicode::NFKC, NormalizerWrapper};
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Decoder};

/// How a line of text is split into tokens and joined back.
///
/// Serialised in a model's `config.json` as `"chars"`, `"whitespace"`, or
/// `{"bpe": <Hugging Face tokenizer.json>}`, so a subword model travels inside the model
/// folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tokenizer {
    /// One token per Unicode scalar value; whitespace is kept as a token.
    Chars,
    /// Tokens separated by runs of whitespace.
    Whitespace,
    /// Learned subwords: see [`Subword`].
    Bpe(Subword),
}

impl Tokenizer {
    /// Splits `text` into tokens.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        match self {
            Tokenizer::Chars => text.chars().map(String::from).collect(),
            Tokenizer::Whitespace => text.split_whitespace().map(String::from).collect(),
            Tokenizer::Bpe(s) => s.tokenize(text),
        }
    }

    /// Joins tokens back into text (the inverse of [`tokenize`](Self::tokenize) for
    /// normalised input).
    pub fn detokenize<S: AsRef<str>>(&self, tokens: &[S]) -> String {
        let tokens = tokens.iter().map(|t| t.as_ref());
        match self {
            Tokenizer::Chars => tokens.collect(),
            Tokenizer::Whitespace => tokens.collect::<Vec<_>>().join(" "),
            Tokenizer::Bpe(s) => s.detokenize(tokens),
        }
    }

    /// A short name for logs: `chars`, `whitespace`, `bpe(8000)`.
    pub fn describe(&self) -> String {
        match self {
            Tokenizer::Chars => "chars".into(),
            Tokenizer::Whitespace => "whitespace".into(),
            Tokenizer::Bpe(s) => format!("bpe({})", s.vocab_size()),
        }
    }
}

/// The word-boundary marker of subword tokens (SentencePiece's `▁`, U+2581).
pub const WORD_MARK: char = '\u{2581}';

/// A byte-pair-encoding subword tokenizer trained on a corpus.
///
/// Text is normalised with NFKC first, which also turns the no-break spaces of French
/// typography (U+00A0 before `:`, U+202F before `!`, `?`, `;`) into plain spaces, so
/// `Va !` and `Va\u{202F}!` tokenize alike; detokenized output uses plain spaces. Words are
/// marked with a leading `▁` (SentencePiece style), so detokenization restores the spacing
/// exactly: `detokenize(tokenize(t)) == nfkc(t)` with runs of whitespace collapsed and the
/// ends trimmed. Characters never seen in training become `<unk>`, never silently dropped.
#[derive(Clone)]
pub struct Subword {
    inner: Arc<tokenizers::Tokenizer>,
}

impl Subword {
    /// Learns a BPE model of at most `vocab_size` tokens (including single characters and
    /// `<unk>`) from `texts`; merges need at least `min_frequency` occurrences.
    pub fn train<I, S>(texts: I, vocab_size: usize, min_frequency: u64) -> Result<Self, DataError>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let err = |e: tokenizers::Error| DataError::Tokenizer(e.to_string());
        let model = BPE::builder()
            .unk_token("<unk>".into())
            .build()
            .map_err(err)?;
        let mut tk = tokenizers::Tokenizer::new(model);
        tk.with_normalizer(Some(NormalizerWrapper::from(NFKC)));
        let meta = Metaspace::new(WORD_MARK, PrependScheme::Always, true);
        tk.with_pre_tokenizer(Some(PreTokenizerWrapper::from(meta.clone())));
        tk.with_decoder(Some(DecoderWrapper::from(meta)));
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(min_frequency)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from("<unk>", true)])
            .build()
            .into();
        tk.train(&mut trainer, texts).map_err(err)?;
        Ok(Subword {
            inner: Arc::new(tk),
        })
    }

    /// The number of subword types (including `<unk>`).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Splits text into subword tokens.
    pub fn tokenize(&self, text: &str) -> Vec<String> {
        match self.inner.encode(text, false) {
            Ok(enc) => enc.get_tokens().to_vec(),
            // BPE with an `<unk>` token cannot fail on any input; keep a visible trace if a
            // future version ever does instead of dropping the text.
            Err(_) => vec!["<unk>".into()],
        }
    }

    /// Joins subword tokens back into text.
    pub fn detokenize<'a>(&self, tokens: impl Iterator<Item = &'a str>) -> String {
        let tokens: Vec<String> = tokens.map(String::from).collect();
        match self.inner.get_decoder() {
            Some(d) => d
                .decode(tokens.clone())
                .unwrap_or_else(|_| plain_join(&tokens)),
            None => plain_join(&tokens),
        }
    }

    /// The Hugging Face `tokenizer.json` text of this tokenizer.
    pub fn to_json(&self) -> String {
        self.inner
            .to_string(false)
            .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// Reads a tokenizer from Hugging Face `tokenizer.json` text.
    pub fn from_json(json: &str) -> Result<Self, DataError> {
        let tk: tokenizers::Tokenizer = json
            .parse()
            .map_err(|e: tokenizers::Error| DataError::Tokenizer(e.to_string()))?;
        Ok(Subword {
            inner: Arc::new(tk),
        })
    }
}

/// Fallback detokenization: concatenate, `▁` becomes a space.
fn plain_join(tokens: &[String]) -> String {
    tokens
        .concat()
        .replace(WORD_MARK, " ")
        .trim_start()
        .to_string()
}

impl fmt::Debug for Subword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Subword(bpe, {} tokens)", self.vocab_size())
    }
}

impl PartialEq for Subword {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.to_json() == other.to_json()
    }
}

impl Serialize for Subword {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.inner.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Subword {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Subword {
            inner: Arc::new(tokenizers::Tokenizer::deserialize(d)?),
        })
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

    fn french() -> Vec<&'static str> {
        vec![
            "Je suis fatigué\u{202F}!",
            "Tu es fatiguée ?",
            "Il est très fatigué.",
            "Nous sommes prêts\u{00A0}: allons-y\u{202F}!",
            "Elle n'est pas là.",
            "Je ne suis pas fatigué.",
            "C'est l'été.",
        ]
    }

    fn trained() -> Subword {
        let corpus: Vec<&str> = french().into_iter().cycle().take(70).collect();
        Subword::train(corpus.into_iter(), 120, 2).unwrap()
    }

    #[test]
    fn bpe_learns_merges_and_detokenizes_exactly() {
        let bpe = trained();
        assert!(bpe.vocab_size() <= 120, "{}", bpe.vocab_size());
        let toks = bpe.tokenize("Je suis fatigué.");
        // Frequent words become single tokens with the word mark.
        assert!(toks.contains(&"▁suis".to_string()), "{toks:?}");
        assert!(toks.len() < "Je suis fatigué.".chars().count(), "{toks:?}");
        let tok = Tokenizer::Bpe(bpe);
        for s in french() {
            let expected: String = s.replace(['\u{202F}', '\u{00A0}'], " ");
            assert_eq!(tok.detokenize(&tok.tokenize(s)), expected);
        }
    }

    #[test]
    fn no_break_spaces_tokenize_like_spaces() {
        let tok = Tokenizer::Bpe(trained());
        assert_eq!(tok.tokenize("fatigué\u{202F}!"), tok.tokenize("fatigué !"));
        assert_eq!(tok.tokenize("prêts\u{00A0}:"), tok.tokenize("prêts :"));
    }

    #[test]
    fn unseen_characters_become_unk_not_nothing() {
        let tok = Tokenizer::Bpe(trained());
        let toks = tok.tokenize("Je suis 猫");
        assert!(toks.iter().any(|t| t == "<unk>"), "{toks:?}");
    }

    #[test]
    fn serde_round_trip_keeps_the_model() {
        let tok = Tokenizer::Bpe(trained());
        let json = serde_json::to_string(&tok).unwrap();
        assert!(json.starts_with("{\"bpe\":"), "{}", &json[..20]);
        let back: Tokenizer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tok);
        assert_eq!(
            back.tokenize("Nous sommes là."),
            tok.tokenize("Nous sommes là.")
        );
        // The unit variants keep their old spelling.
        assert_eq!(
            serde_json::to_string(&Tokenizer::Chars).unwrap(),
            "\"chars\""
        );
    }
}
