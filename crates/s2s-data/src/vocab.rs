//! Token vocabularies with reserved special tokens.

use crate::DataError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// A token <-> id map. Ids 0..4 are reserved: `<pad>` = 0, `<sos>` = 1, `<eos>` = 2,
/// `<unk>` = 3; the other tokens follow, most frequent first (ties alphabetical), so that a
/// vocabulary built from the same data is always the same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "VocabFile", into = "VocabFile")]
pub struct Vocab {
    tokens: Vec<String>,
    index: HashMap<String, u32>,
}

#[derive(Serialize, Deserialize)]
struct VocabFile {
    tokens: Vec<String>,
}

impl TryFrom<VocabFile> for Vocab {
    type Error = String;
    fn try_from(file: VocabFile) -> Result<Self, String> {
        if file.tokens.len() < Vocab::SPECIALS.len()
            || file.tokens[..Vocab::SPECIALS.len()] != Vocab::SPECIALS
        {
            return Err(format!("the first tokens must be {:?}", Vocab::SPECIALS));
        }
        let mut index = HashMap::with_capacity(file.tokens.len());
        for (i, t) in file.tokens.iter().enumerate() {
            if index.insert(t.clone(), i as u32).is_some() {
                return Err(format!("token {t:?} appears twice"));
            }
        }
        Ok(Vocab {
            tokens: file.tokens,
            index,
        })
    }
}

impl From<Vocab> for VocabFile {
    fn from(v: Vocab) -> Self {
        VocabFile { tokens: v.tokens }
    }
}

impl Vocab {
    /// Padding id.
    pub const PAD: u32 = 0;
    /// Start-of-sequence id.
    pub const SOS: u32 = 1;
    /// End-of-sequence id.
    pub const EOS: u32 = 2;
    /// Unknown-token id.
    pub const UNK: u32 = 3;
    /// The special tokens, in id order.
    pub const SPECIALS: [&'static str; 4] = ["<pad>", "<sos>", "<eos>", "<unk>"];

    /// Builds a vocabulary from tokenized sentences, keeping tokens seen at least `min_freq`
    /// times.
    pub fn build<'a, I, S>(sentences: I, min_freq: usize) -> Self
    where
        I: IntoIterator<Item = &'a Vec<S>>,
        S: AsRef<str> + 'a,
    {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for sentence in sentences {
            for tok in sentence {
                *counts.entry(tok.as_ref()).or_default() += 1;
            }
        }
        let mut entries: Vec<(&str, usize)> = counts
            .into_iter()
            .filter(|(t, c)| *c >= min_freq && !Self::SPECIALS.contains(t))
            .collect();
        entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let tokens: Vec<String> = Self::SPECIALS
            .iter()
            .map(|s| s.to_string())
            .chain(entries.into_iter().map(|(t, _)| t.to_string()))
            .collect();
        Vocab::try_from(VocabFile { tokens }).expect("built vocabulary is valid")
    }

    /// Number of tokens, specials included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// True when only the special tokens are present.
    pub fn is_empty(&self) -> bool {
        self.tokens.len() == Self::SPECIALS.len()
    }

    /// The id of `token`, if known.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    /// The token of `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// Maps tokens to ids; unknown tokens become [`Vocab::UNK`].
    pub fn encode<S: AsRef<str>>(&self, tokens: &[S]) -> Vec<u32> {
        tokens
            .iter()
            .map(|t| self.id(t.as_ref()).unwrap_or(Self::UNK))
            .collect()
    }

    /// Maps tokens to ids and also returns the tokens that were not in the vocabulary.
    pub fn encode_reporting<S: AsRef<str>>(&self, tokens: &[S]) -> (Vec<u32>, Vec<String>) {
        let mut unknown = Vec::new();
        let ids = tokens
            .iter()
            .map(|t| {
                self.id(t.as_ref()).unwrap_or_else(|| {
                    unknown.push(t.as_ref().to_string());
                    Self::UNK
                })
            })
            .collect();
        (ids, unknown)
    }

    /// Maps ids back to tokens, stopping at the first `<eos>` and skipping `<pad>`/`<sos>`.
    pub fn decode(&self, ids: &[u32]) -> Vec<String> {
        ids.iter()
            .take_while(|&&id| id != Self::EOS)
            .filter(|&&id| id != Self::PAD && id != Self::SOS)
            .map(|&id| self.token(id).unwrap_or("<unk>").to_string())
            .collect()
    }

    /// All tokens in id order.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Writes the vocabulary as JSON.
    pub fn save(&self, path: &Path) -> Result<(), DataError> {
        let json = serde_json::to_string_pretty(self).expect("vocabulary serialises");
        std::fs::write(path, json).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads a vocabulary written by [`save`](Self::save).
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| DataError::Vocab {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_is_deterministic_and_reserves_specials() {
        let data = [vec!["b", "a", "b"], vec!["c", "a", "b"]];
        let v = Vocab::build(data.iter(), 1);
        assert_eq!(v.tokens()[..4], Vocab::SPECIALS);
        assert_eq!(&v.tokens()[4..], &["b", "a", "c"]);
        let v2 = Vocab::build(data.iter(), 2);
        assert_eq!(&v2.tokens()[4..], &["b", "a"]);
        assert_eq!(v2.encode(&["c", "a"]), vec![Vocab::UNK, 5]);
    }

    #[test]
    fn save_load_round_trip_and_rejects_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let v = Vocab::build([vec!["x", "y"]].iter(), 1);
        let p = dir.path().join("v.json");
        v.save(&p).unwrap();
        assert_eq!(Vocab::load(&p).unwrap(), v);
        std::fs::write(&p, r#"{"tokens":["a","b"]}"#).unwrap();
        let err = Vocab::load(&p).unwrap_err().to_string();
        assert!(
            err.contains("v.json") && err.contains("first tokens"),
            "{err}"
        );
    }

    #[test]
    fn decode_stops_at_eos() {
        let v = Vocab::build([vec!["x", "y"]].iter(), 1);
        let ids = vec![Vocab::SOS, 4, 5, Vocab::EOS, 4];
        assert_eq!(v.decode(&ids), vec!["x", "y"]);
    }
}
