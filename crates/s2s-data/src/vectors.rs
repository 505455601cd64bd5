//! Pretrained word vectors (GloVe or word2vec text files) for initialising embeddings.

use crate::{DataError, Vocab};
use std::collections::HashSet;
use std::path::Path;

/// The vectors of a file that belong to a vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct WordVectors {
    /// Vector size.
    pub dim: usize,
    /// `(vocabulary id, vector)` for every vocabulary token found in the file.
    pub rows: Vec<(u32, Vec<f32>)>,
    /// Vectors in the file.
    pub in_file: usize,
    /// Repeated words in the file (the first vector of a word is used).
    pub repeated: usize,
}

/// Reads a GloVe (`word v1 ... vd` per line) or word2vec text file (the same after a
/// `count dim` header line) and keeps the vectors of `vocab`'s tokens (special tokens
/// excluded). Every line must have the same number of values, all finite numbers; anything
/// else is an error naming the file and line.
pub fn read_word_vectors(path: &Path, vocab: &Vocab) -> Result<WordVectors, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_word_vectors(path, &bytes, vocab)
}

/// Parses word vectors read from `path`; see [`read_word_vectors`].
pub fn parse_word_vectors(
    path: &Path,
    bytes: &[u8],
    vocab: &Vocab,
) -> Result<WordVectors, DataError> {
    let err = |line: usize, message: String| DataError::Line {
        path: path.to_path_buf(),
        line,
        message,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        err(line, "invalid UTF-8".into())
    })?;
    let mut dim = None;
    let mut header_dim = None;
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    let (mut in_file, mut repeated) = (0, 0);
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            return Err(err(n, "empty line".into()));
        }
        let mut fields = line.split_whitespace();
        let word = fields.next().unwrap_or_default();
        let values: Vec<&str> = fields.collect();
        if n == 1 && values.len() == 1 {
            if let (Ok(_), Ok(d)) = (word.parse::<usize>(), values[0].parse::<usize>()) {
                header_dim = Some(d);
                continue;
            }
        }
        if values.is_empty() {
            return Err(err(n, format!("no vector after the word {word:?}")));
        }
        let expected = *dim.get_or_insert(header_dim.unwrap_or(values.len()));
        if values.len() != expected {
            return Err(err(
                n,
                format!("{} values where the file has {expected}", values.len()),
            ));
        }
        in_file += 1;
        if !seen.insert(word) {
            repeated += 1;
            continue;
        }
        let Some(id) = vocab
            .id(word)
            .filter(|&id| id >= Vocab::SPECIALS.len() as u32)
        else {
            continue;
        };
        let vector = values
            .iter()
            .map(|v| match v.parse::<f32>() {
                Ok(x) if x.is_finite() => Ok(x),
                _ => Err(err(n, format!("{v:?} is not a finite number"))),
            })
            .collect::<Result<Vec<f32>, _>>()?;
        rows.push((id, vector));
    }
    let Some(dim) = dim else {
        return Err(DataError::File {
            path: path.to_path_buf(),
            message: "the file holds no vectors".into(),
        });
    };
    Ok(WordVectors {
        dim,
        rows,
        in_file,
        repeated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocab {
        Vocab::build([vec!["le", "chat", "dort"]].iter(), 1)
    }

    #[test]
    fn reads_glove_and_word2vec_text() {
        let v = vocab();
        let glove = b"chat 0.5 -1\nzebra 1 2\ndort 3 4e-1\n";
        let wv = parse_word_vectors(Path::new("g.txt"), glove, &v).unwrap();
        assert_eq!(wv.dim, 2);
        assert_eq!(wv.in_file, 3);
        assert_eq!(
            wv.rows,
            vec![
                (v.id("chat").unwrap(), vec![0.5, -1.0]),
                (v.id("dort").unwrap(), vec![3.0, 0.4])
            ]
        );
        let w2v = b"2 2\nle 1 1\nle 2 2\n";
        let wv = parse_word_vectors(Path::new("w.txt"), w2v, &v).unwrap();
        assert_eq!(wv.rows, vec![(v.id("le").unwrap(), vec![1.0, 1.0])]);
        assert_eq!(wv.repeated, 1);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let v = vocab();
        let cases: [(&[u8], &str); 4] = [
            (
                b"chat 1 2\ndort 1\n",
                "v.txt:2: 1 values where the file has 2",
            ),
            (b"chat 1 x\n", "v.txt:1: \"x\" is not a finite number"),
            (b"chat 1 2\n\n", "v.txt:2: empty line"),
            (b"chat\n", "v.txt:1: no vector after the word \"chat\""),
        ];
        for (text, expected) in cases {
            let e = parse_word_vectors(Path::new("v.txt"), text, &v).unwrap_err();
            assert_eq!(e.to_string(), expected);
        }
    }
}
