//! Parallel corpora: TSV files, CMUdict grapheme-to-phoneme data and synthetic tasks.

use crate::{DataError, Tokenizer, Vocab};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A source/target pair of raw text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pair {
    /// Source text.
    pub source: String,
    /// Target text.
    pub target: String,
}

impl Pair {
    /// A pair from two strings.
    pub fn new(source: impl Into<String>, target: impl Into<String>) -> Self {
        Pair {
            source: source.into(),
            target: target.into(),
        }
    }
}

/// A pair encoded as token ids (without `<sos>`/`<eos>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Source ids.
    pub source: Vec<u32>,
    /// Target ids.
    pub target: Vec<u32>,
}

/// A source with every reference target seen for it (variant pronunciations, alternative
/// translations), in first-seen order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Source text.
    pub source: String,
    /// All reference targets.
    pub targets: Vec<String>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn line_err(path: &Path, line: usize, message: impl Into<String>) -> DataError {
    DataError::Line {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    }
}

/// Splits raw bytes into `(1-based line number, text)` pairs, checking UTF-8 per line.
/// A final newline does not produce an extra empty line; `\r\n` endings are accepted.
fn utf8_lines<'a>(path: &Path, bytes: &'a [u8]) -> Result<Vec<(usize, &'a str)>, DataError> {
    let mut lines = Vec::new();
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if body.is_empty() && bytes.len() <= 1 {
        return Ok(lines);
    }
    for (i, raw) in body.split(|&b| b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = std::str::from_utf8(raw).map_err(|e| {
            line_err(
                path,
                i + 1,
                format!("invalid UTF-8 at byte {} of the line", e.valid_up_to()),
            )
        })?;
        lines.push((i + 1, text));
    }
    Ok(lines)
}

/// Parses TSV text (`source<TAB>target` per line) read from `path`.
///
/// Every line must hold exactly one tab with non-blank text on both sides; anything else is
/// an error naming the file and line. Nothing is skipped.
pub fn parse_tsv(path: &Path, bytes: &[u8]) -> Result<Vec<Pair>, DataError> {
    let lines = utf8_lines(path, bytes)?;
    let pairs = lines
        .par_iter()
        .map(|&(n, line)| {
            let mut parts = line.split('\t');
            let (Some(src), Some(tgt)) = (parts.next(), parts.next()) else {
                return Err(line_err(
                    path,
                    n,
                    "expected `source<TAB>target`, found no tab",
                ));
            };
            if parts.next().is_some() {
                let tabs = line.matches('\t').count();
                return Err(line_err(
                    path,
                    n,
                    format!("expected exactly one tab, found {tabs}"),
                ));
            }
            if src.trim().is_empty() {
                return Err(line_err(path, n, "empty source side"));
            }
            if tgt.trim().is_empty() {
                return Err(line_err(path, n, "empty target side"));
            }
            Ok(Pair::new(src.trim(), tgt.trim()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if pairs.is_empty() {
        return Err(DataError::File {
            path: path.to_path_buf(),
            message: "the file holds no pairs".into(),
        });
    }
    Ok(pairs)
}

/// Reads a parallel TSV file. See [`parse_tsv`] for the format and errors.
pub fn read_tsv(path: &Path) -> Result<Vec<Pair>, DataError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    parse_tsv(path, &bytes)
}

/// Writes pairs as TSV.
pub fn write_tsv(path: &Path, pairs: &[Pair]) -> Result<(), DataError> {
    let mut text = String::new();
    for p in pairs {
        text.push_str(&p.source);
        text.push('\t');
        text.push_str(&p.target);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(io_err(path))
}

/// Groups pairs by source, keeping every distinct target as a reference, sources in
/// first-seen order.
pub fn group_references(pairs: &[Pair]) -> Vec<Reference> {
    let mut order: Vec<Reference> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = Default::default();
    for p in pairs {
        match index.get(p.source.as_str()) {
            Some(&i) => {
                if !order[i].targets.contains(&p.target) {
                    order[i].targets.push(p.target.clone());
                }
            }
            None => {
                index.insert(&p.source, order.len());
                order.push(Reference {
                    source: p.source.clone(),
                    targets: vec![p.target.clone()],
                });
            }
        }
    }
    order
}

/// Tokenizes and encodes pairs (in parallel), keeping their order.
pub fn encode_pairs(
    pairs: &[Pair],
    src_tok: &Tokenizer,
    tgt_tok: &Tokenizer,
    src_vocab: &Vocab,
    tgt_vocab: &Vocab,
) -> Vec<Example> {
    pairs
        .par_iter()
        .map(|p| Example {
            source: src_vocab.encode(&src_tok.tokenize(&p.source)),
            target: tgt_vocab.encode(&tgt_tok.tokenize(&p.target)),
        })
        .collect()
}

/// Which part of a deterministic split an item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training data (90%).
    Train,
    /// Validation data (5%).
    Dev,
    /// Held-out test data (5%).
    Test,
}

/// 64-bit FNV-1a: a fixed hash, the same on every platform and Rust version.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The split of a key: `fnv1a(key) % 100` in `0..90` is train, `90..95` dev, `95..100` test.
pub fn split_of(key: &str) -> Split {
    match fnv1a(key.as_bytes()) % 100 {
        0..=89 => Split::Train,
        90..=94 => Split::Dev,
        _ => Split::Test,
    }
}

/// Train, validation and test pairs.
#[derive(Debug, Clone, Default)]
pub struct Splits {
    /// Training pairs.
    pub train: Vec<Pair>,
    /// Validation pairs.
    pub dev: Vec<Pair>,
    /// Test pairs.
    pub test: Vec<Pair>,
}

impl Splits {
    /// Splits pairs by [`split_of`] their source, so that all targets of one source land
    /// in the same split.
    pub fn by_source_hash(pairs: Vec<Pair>) -> Self {
        let mut s = Splits::default();
        for p in pairs {
            match split_of(&p.source) {
                Split::Train => s.train.push(p),
                Split::Dev => s.dev.push(p),
                Split::Test => s.test.push(p),
            }
        }
        s
    }
}

/// Options for reading CMUdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CmudictOptions {
    /// Keep the stress digits of vowels (`AH0`); removed by default (`AH`).
    pub keep_stress: bool,
}

/// Parses CMUdict text (cmusphinx format: `word PH1 PH2 ...`, variants as `word(2)`,
/// comments after `#`) into `word -> phonemes` pairs. Variant pronunciations become extra
/// pairs with the same source; duplicates created by stress removal are dropped (only
/// identical pronunciations of the same word, never a word).
pub fn parse_cmudict(
    path: &Path,
    bytes: &[u8],
    options: CmudictOptions,
) -> Result<Vec<Pair>, DataError> {
    let lines = utf8_lines(path, bytes)?;
    let mut by_word: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut order = Vec::new();
    for (n, line) in lines {
        let content = line.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            if line.trim_start().starts_with('#') {
                continue; // A comment line: not data.
            }
            return Err(line_err(path, n, "empty line"));
        }
        let mut fields = content.split_whitespace();
        let head = fields.next().expect("non-empty line has a field");
        let word = match head.find('(') {
            Some(i)
                if head.ends_with(')') && head[i + 1..head.len() - 1].parse::<u32>().is_ok() =>
            {
                &head[..i]
            }
            Some(_) => {
                return Err(line_err(
                    path,
                    n,
                    format!("malformed variant marker in {head:?}"),
                ))
            }
            None => head,
        };
        let mut phones = Vec::new();
        for ph in fields {
            if !ph
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
            {
                return Err(line_err(path, n, format!("malformed phoneme {ph:?}")));
            }
            phones.push(if options.keep_stress {
                ph.to_string()
            } else {
                ph.trim_end_matches(|c: char| c.is_ascii_digit())
                    .to_string()
            });
        }
        if phones.is_empty() {
            return Err(line_err(path, n, format!("word {word:?} has no phonemes")));
        }
        let word = word.to_lowercase();
        let pron = phones.join(" ");
        let entry = by_word.entry(word.clone()).or_insert_with(|| {
            order.push(word.clone());
            Vec::new()
        });
        if !entry.contains(&pron) {
            entry.push(pron);
        }
    }
    let mut pairs = Vec::new();
    for word in order {
        for pron in &by_word[&word] {
            pairs.push(Pair::new(word.clone(), pron.clone()));
        }
    }
    Ok(pairs)
}

/// Reads CMUdict and splits it by word (see [`split_of`]): about 90% train, 5% dev, 5% test,
/// with all pronunciations of a word in one split.
pub fn read_cmudict(path: &Path, options: CmudictOptions) -> Result<Splits, DataError> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    Ok(Splits::by_source_hash(parse_cmudict(
        path, &bytes, options,
    )?))
}

/// Synthetic tasks over random strings of letters, for tests and examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyntheticTask {
    /// Output = input.
    Copy,
    /// Output = input reversed.
    Reverse,
    /// Output = input sorted.
    Sort,
    /// Every input token repeated twice (output twice as long).
    Double,
}

impl SyntheticTask {
    /// Applies the task to a sequence of symbols.
    pub fn apply(&self, input: &[char]) -> Vec<char> {
        match self {
            SyntheticTask::Copy => input.to_vec(),
            SyntheticTask::Reverse => input.iter().rev().copied().collect(),
            SyntheticTask::Sort => {
                let mut v = input.to_vec();
                v.sort_unstable();
                v
            }
            SyntheticTask::Double => input.iter().flat_map(|&c| [c, c]).collect(),
        }
    }

    /// Generates `n` pairs of random strings with lengths in `min_len..=max_len` over the
    /// first `alphabet` lowercase letters, reproducibly from `seed`. Source and target are
    /// written as characters (use [`Tokenizer::Chars`]).
    pub fn generate(
        &self,
        n: usize,
        min_len: usize,
        max_len: usize,
        alphabet: usize,
        seed: u64,
    ) -> Vec<Pair> {
        assert!(
            (1..=26).contains(&alphabet),
            "alphabet must be 1..=26 letters"
        );
        assert!(
            min_len >= 1 && min_len <= max_len,
            "need 1 <= min_len <= max_len"
        );
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let len = rng.random_range(min_len..=max_len);
                let input: Vec<char> = (0..len)
                    .map(|_| (b'a' + rng.random_range(0..alphabet) as u8) as char)
                    .collect();
                let output = self.apply(&input);
                Pair::new(
                    input.into_iter().collect::<String>(),
                    output.into_iter().collect::<String>(),
                )
            })
            .collect()
    }
}

/// English sentence starts kept by the PyTorch seq2seq tutorial's filter (after its
/// normalisation: lower case, apostrophes as spaces).
pub const TUTORIAL_PREFIXES: [&str; 12] = [
    "i am ", "i m ", "he is", "he s ", "she is", "she s ", "you are", "you re ", "we are",
    "we re ", "they are", "they re ",
];

/// The PyTorch seq2seq tutorial's filter on English-French pairs: the English side (the
/// source) starts with one of [`TUTORIAL_PREFIXES`] and both sides are shorter than
/// `max_words` words, counted as the tutorial does (`.`, `!`, `?` split off as words).
///
/// The tutorial lower-cases, strips accents and drops other punctuation before testing;
/// here only the test uses that normalisation, the pairs keep their original text.
pub fn tutorial_filter(pairs: Vec<Pair>, max_words: usize) -> Vec<Pair> {
    fn normalise(s: &str) -> String {
        let mut out = String::with_capacity(s.len() + 4);
        for c in s.chars().flat_map(char::to_lowercase) {
            match c {
                '.' | '!' | '?' => {
                    out.push(' ');
                    out.push(c);
                }
                c if c.is_alphabetic() => out.push(c),
                _ => out.push(' '),
            }
        }
        out.split_whitespace().collect::<Vec<_>>().join(" ")
    }
    pairs
        .into_iter()
        .filter(|p| {
            let src = normalise(&p.source);
            let n_tgt = normalise(&p.target).split(' ').count();
            src.split(' ').count() < max_words
                && n_tgt < max_words
                && TUTORIAL_PREFIXES.iter().any(|pre| src.starts_with(pre))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> &'static Path {
        Path::new("data.tsv")
    }

    #[test]
    fn tsv_reads_pairs_and_crlf() {
        let pairs = parse_tsv(p(), b"a b\tx y\r\nc\tz\n").unwrap();
        assert_eq!(pairs, vec![Pair::new("a b", "x y"), Pair::new("c", "z")]);
    }

    #[test]
    fn tsv_errors_name_file_and_line() {
        let cases: [(&[u8], &str); 6] = [
            (
                b"a\tb\nno tab here\n",
                "data.tsv:2: expected `source<TAB>target`, found no tab",
            ),
            (
                b"a\tb\tc\n",
                "data.tsv:1: expected exactly one tab, found 2",
            ),
            (b"a\tb\n\tb\n", "data.tsv:2: empty source side"),
            (b"a\t \n", "data.tsv:1: empty target side"),
            (
                b"a\tb\nx\xff\ty\n",
                "data.tsv:2: invalid UTF-8 at byte 1 of the line",
            ),
            (
                b"a\tb\n\nc\td\n",
                "data.tsv:2: expected `source<TAB>target`, found no tab",
            ),
        ];
        for (input, expected) in cases {
            let err = parse_tsv(p(), input).unwrap_err().to_string();
            assert_eq!(err, expected);
        }
        let err = parse_tsv(p(), b"").unwrap_err().to_string();
        assert_eq!(err, "data.tsv: the file holds no pairs");
    }

    #[test]
    fn read_tsv_reports_missing_file() {
        let err = read_tsv(Path::new("/nonexistent/x.tsv"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("/nonexistent/x.tsv: "), "{err}");
    }

    #[test]
    fn cmudict_variants_stress_and_comments() {
        let text = b";;; not a comment in this format\n";
        assert!(parse_cmudict(p(), text, CmudictOptions::default()).is_err());
        let text =
            b"# header\nread R IY1 D\nread(2) R EH1 D\nlead L IY1 D # verb\nlead(2) L IY0 D\n";
        let pairs = parse_cmudict(p(), text, CmudictOptions::default()).unwrap();
        assert_eq!(
            pairs,
            vec![
                Pair::new("read", "R IY D"),
                Pair::new("read", "R EH D"),
                Pair::new("lead", "L IY D"),
            ]
        );
        let stressed = parse_cmudict(p(), text, CmudictOptions { keep_stress: true }).unwrap();
        assert_eq!(stressed.len(), 4);
        assert_eq!(stressed[3], Pair::new("lead", "L IY0 D"));
        let err = parse_cmudict(p(), b"ok OW1\nbad\n", CmudictOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), "data.tsv:2: word \"bad\" has no phonemes");
    }

    #[test]
    fn split_keeps_variants_together_and_is_stable() {
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let pairs = vec![Pair::new("read", "R IY D"), Pair::new("read", "R EH D")];
        let s = Splits::by_source_hash(pairs);
        let sizes = [s.train.len(), s.dev.len(), s.test.len()];
        assert!(sizes.contains(&2) && sizes.iter().sum::<usize>() == 2);
        let words: Vec<String> = (0..10_000).map(|i| format!("w{i}")).collect();
        let test = words.iter().filter(|w| split_of(w) == Split::Test).count();
        assert!((400..600).contains(&test), "test share {test}/10000");
    }

    #[test]
    fn synthetic_tasks() {
        let chars: Vec<char> = "cab".chars().collect();
        assert_eq!(SyntheticTask::Reverse.apply(&chars), vec!['b', 'a', 'c']);
        assert_eq!(SyntheticTask::Sort.apply(&chars), vec!['a', 'b', 'c']);
        assert_eq!(
            SyntheticTask::Double.apply(&chars[..2]),
            vec!['c', 'c', 'a', 'a']
        );
        let a = SyntheticTask::Double.generate(50, 1, 5, 6, 7);
        assert_eq!(a, SyntheticTask::Double.generate(50, 1, 5, 6, 7));
        assert!(a.iter().all(|p| p.target.len() == 2 * p.source.len()));
    }

    #[test]
    fn references_group_targets() {
        let pairs = vec![
            Pair::new("a", "1"),
            Pair::new("b", "2"),
            Pair::new("a", "3"),
        ];
        let refs = group_references(&pairs);
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].targets, vec!["1", "3"]);
    }

    #[test]
    fn tutorial_filter_keeps_short_pronoun_sentences() {
        let pairs = vec![
            Pair::new("I'm tired.", "Je suis fatigué."),
            Pair::new("He is very, very tall.", "Il est très, très grand."),
            Pair::new("They're here!", "Ils sont là !"),
            Pair::new("Go.", "Va !"),
            Pair::new("Ice is cold.", "La glace est froide."),
            Pair::new(
                "I am going to the market to buy some apples and pears.",
                "Je vais au marché acheter des pommes et des poires.",
            ),
        ];
        let kept = tutorial_filter(pairs, 10);
        let sources: Vec<&str> = kept.iter().map(|p| p.source.as_str()).collect();
        assert_eq!(
            sources,
            ["I'm tired.", "He is very, very tall.", "They're here!"]
        );
    }
}
