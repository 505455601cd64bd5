//! Shared by the sacreBLEU comparison tests: the cases of `tests/data/cases.json` and how to
//! run them with this crate.
#![allow(dead_code)]

use std::path::PathBuf;

use s2s_metrics::{BleuConfig, BleuScore, ChrfConfig, ChrfScore, Smoothing};
use serde_json::Value;

/// `crates/s2s-metrics/tests/data`.
pub fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Reads a data file as the sacrebleu command line does: UTF-8, split on `\n`, each line
/// right-stripped.
pub fn read_lines(name: &str) -> Vec<String> {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut lines: Vec<String> = text.split('\n').map(|l| l.trim_end().to_owned()).collect();
    if text.ends_with('\n') {
        lines.pop();
    }
    lines
}

/// A metric configuration of a case.
#[derive(Debug, Clone)]
pub enum Metric {
    /// BLEU with these settings.
    Bleu(BleuConfig),
    /// chrF with these settings.
    Chrf(ChrfConfig),
}

/// One case of `cases.json`.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub metric: Metric,
    pub hyp: String,
    pub refs: Vec<String>,
}

/// A computed result.
#[derive(Debug, Clone)]
pub enum Computed {
    Bleu(BleuScore),
    Chrf(ChrfScore),
}

impl Computed {
    pub fn score(&self) -> f64 {
        match self {
            Computed::Bleu(s) => s.score,
            Computed::Chrf(s) => s.score,
        }
    }

    pub fn signature(&self) -> &str {
        match self {
            Computed::Bleu(s) => s.signature(),
            Computed::Chrf(s) => s.signature(),
        }
    }

    pub fn display(&self) -> String {
        match self {
            Computed::Bleu(s) => s.to_string(),
            Computed::Chrf(s) => s.to_string(),
        }
    }

    pub fn with_signature(&self, width: usize) -> String {
        match self {
            Computed::Bleu(s) => s.format_with_signature(width),
            Computed::Chrf(s) => s.format_with_signature(width),
        }
    }
}

/// Maps sacreBLEU's constructor keyword arguments (as in `cases.json`) to a configuration.
fn metric(kind: &str, args: &serde_json::Map<String, Value>) -> Metric {
    let b = |k: &str| args[k].as_bool().unwrap();
    let u = |k: &str| args[k].as_u64().unwrap();
    match kind {
        "bleu" => {
            let mut c = BleuConfig::default();
            let value = args.get("smooth_value").and_then(Value::as_f64);
            for key in args.keys() {
                match key.as_str() {
                    "lowercase" => c.lowercase = b(key),
                    "tokenize" => c.tokenizer = args[key].as_str().unwrap().parse().unwrap(),
                    "effective_order" => c.effective_order = b(key),
                    "max_ngram_order" => c.max_ngram_order = u(key) as usize,
                    "smooth_value" => {}
                    "smooth_method" => {
                        c.smoothing = match args[key].as_str().unwrap() {
                            "exp" => Smoothing::Exp,
                            "none" => Smoothing::None,
                            "floor" => Smoothing::Floor(value.unwrap_or(Smoothing::FLOOR_DEFAULT)),
                            "add-k" => Smoothing::AddK(value.unwrap_or(Smoothing::ADD_K_DEFAULT)),
                            other => panic!("unknown smooth_method {other}"),
                        }
                    }
                    other => panic!("unknown BLEU argument {other}"),
                }
            }
            Metric::Bleu(c)
        }
        "chrf" => {
            let mut c = ChrfConfig::default();
            for key in args.keys() {
                match key.as_str() {
                    "char_order" => c.char_order = u(key) as usize,
                    "word_order" => c.word_order = u(key) as usize,
                    "beta" => c.beta = u(key) as u32,
                    "lowercase" => c.lowercase = b(key),
                    "whitespace" => c.whitespace = b(key),
                    "eps_smoothing" => c.eps_smoothing = b(key),
                    other => panic!("unknown chrF argument {other}"),
                }
            }
            Metric::Chrf(c)
        }
        other => panic!("unknown metric {other}"),
    }
}

/// The cases of `tests/data/cases.json`.
pub fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(data_dir().join("cases.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    json.as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_owned(),
            metric: metric(
                c["metric"].as_str().unwrap(),
                c["args"].as_object().unwrap(),
            ),
            hyp: c["hyp"].as_str().unwrap().to_owned(),
            refs: c["refs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect(),
        })
        .collect()
}

/// Runs a case with this crate.
pub fn compute(case: &Case) -> Computed {
    let hyps = read_lines(&case.hyp);
    let refs: Vec<Vec<String>> = case.refs.iter().map(|r| read_lines(r)).collect();
    match &case.metric {
        Metric::Bleu(c) => Computed::Bleu(c.corpus_score(&hyps, &refs).unwrap()),
        Metric::Chrf(c) => Computed::Chrf(c.corpus_score(&hyps, &refs).unwrap()),
    }
}
