//! This crate against sacreBLEU itself, run live.
//!
//! The Python used is `$S2S_VENV/bin/python` if `S2S_VENV` is set, else
//! `<workspace>/.venv/bin/python`; it must be able to `import sacrebleu`. When there is none,
//! each test says so on stderr (the crate was then compared against the numbers recorded in
//! `sacrebleu_recorded.rs` only) and passes, unless `S2S_REQUIRE_SACREBLEU=1`, which makes a
//! missing sacreBLEU, or one of another version, a failure (`cargo xtask test` sets it whenever
//! it uses the virtualenv).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{cases, compute, data_dir, Computed, Metric};
use s2s_metrics::{BleuConfig, ChrfConfig, Tokenizer};
use serde_json::Value;

const TOL: f64 = 1e-9;

fn python_in(venv: &Path) -> Option<PathBuf> {
    [venv.join("bin/python"), venv.join("Scripts/python.exe")]
        .into_iter()
        .find(|p| p.is_file())
}

/// The Python with sacreBLEU and its sacreBLEU version, or `None` after saying why on stderr.
fn sacrebleu_python(test: &str) -> Option<(PathBuf, String)> {
    let venv = match std::env::var_os("S2S_VENV") {
        Some(v) => PathBuf::from(v),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
    };
    let found = python_in(&venv).and_then(|py| {
        let out = Command::new(&py)
            .args(["-c", "import sacrebleu; print(sacrebleu.__version__)"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| (py, String::from_utf8_lossy(&out.stdout).trim().to_owned()))
    });
    if found.is_none() {
        let msg = format!(
            "sacrebleu_live::{test}: NOT compared with a live sacreBLEU: no Python that can \
             `import sacrebleu` in {} (set S2S_VENV to a virtualenv with sacrebleu==2.6.0). \
             s2s-metrics was checked against the recorded sacreBLEU 2.6.0 numbers only \
             (tests/sacrebleu_recorded.rs).\n",
            venv.display()
        );
        // Written to the real stderr, so that it shows even when the test passes.
        let _ = std::io::stderr().write_all(msg.as_bytes());
        if std::env::var_os("S2S_REQUIRE_SACREBLEU").is_some_and(|v| v == "1") {
            panic!("S2S_REQUIRE_SACREBLEU=1 but sacreBLEU was not found");
        }
    } else if let Some((_, version)) = &found {
        if version != s2s_metrics::SACREBLEU_VERSION
            && std::env::var_os("S2S_REQUIRE_SACREBLEU").is_some_and(|v| v == "1")
        {
            panic!(
                "S2S_REQUIRE_SACREBLEU=1 but the sacreBLEU found is {version}, not {}",
                s2s_metrics::SACREBLEU_VERSION
            );
        }
        if version != s2s_metrics::SACREBLEU_VERSION {
            let _ = std::io::stderr().write_all(
                format!(
                    "sacrebleu_live::{test}: sacreBLEU {version} found, this crate follows {}; \
                     signatures are compared without their version\n",
                    s2s_metrics::SACREBLEU_VERSION
                )
                .as_bytes(),
            );
        }
    }
    found
}

fn run_python(py: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(py)
        .args(args)
        .current_dir(data_dir())
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    {
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Compares signatures, leaving the version out when sacreBLEU's differs from ours.
fn same_signature(ours: &str, theirs: &str, version: &str) -> bool {
    ours == theirs.replace(&format!("version:{version}"), "version:2.6.0")
}

#[test]
fn cases_match_live_sacrebleu() {
    let Some((py, version)) = sacrebleu_python("cases_match_live_sacrebleu") else {
        return;
    };
    let script = data_dir().join("sacrebleu_reference.py");
    let cases_json = data_dir().join("cases.json");
    let out = run_python(
        &py,
        &[script.to_str().unwrap(), cases_json.to_str().unwrap()],
        None,
    );
    let json: Value = serde_json::from_str(&out).unwrap();
    let results = json["results"].as_array().unwrap();
    let cases = cases();
    assert_eq!(results.len(), cases.len());
    for (case, r) in cases.iter().zip(results) {
        assert_eq!(r["name"], case.name.as_str());
        let got = compute(case);
        let want = r["score"].as_f64().unwrap();
        assert!(
            (got.score() - want).abs() <= TOL,
            "{}: {} vs live sacreBLEU {want}",
            case.name,
            got.score()
        );
        let sig = r["signature"].as_str().unwrap();
        assert!(
            same_signature(got.signature(), sig, &version),
            "{}",
            case.name
        );
        if version == s2s_metrics::SACREBLEU_VERSION {
            assert_eq!(
                got.display(),
                r["display"].as_str().unwrap(),
                "{}",
                case.name
            );
            assert_eq!(
                got.with_signature(6),
                r["with_signature"].as_str().unwrap(),
                "{}",
                case.name
            );
        }
        let ints = |v: &Value| -> Vec<u64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect()
        };
        match &got {
            Computed::Bleu(s) => {
                assert_eq!(s.sys_len, r["sys_len"].as_u64().unwrap(), "{}", case.name);
                assert_eq!(s.ref_len, r["ref_len"].as_u64().unwrap(), "{}", case.name);
                assert_eq!(s.counts, ints(&r["counts"]), "{}", case.name);
                assert_eq!(s.totals, ints(&r["totals"]), "{}", case.name);
                assert!((s.bp - r["bp"].as_f64().unwrap()).abs() <= TOL);
                for (p, q) in s.precisions.iter().zip(r["precisions"].as_array().unwrap()) {
                    assert!((p - q.as_f64().unwrap()).abs() <= TOL, "{}", case.name);
                }
            }
            Computed::Chrf(s) => {
                let want: Vec<Vec<u64>> = r["stats"].as_array().unwrap().iter().map(ints).collect();
                let got: Vec<Vec<u64>> = s
                    .stats
                    .orders
                    .iter()
                    .map(|o| vec![o.hyp, o.reference, o.matched])
                    .collect();
                assert_eq!(got, want, "{}", case.name);
            }
        }
    }
}

/// The `sacrebleu` command line (which reads the files itself) on the default-settings cases.
#[test]
fn command_line_matches_live_sacrebleu() {
    let Some((py, version)) = sacrebleu_python("command_line_matches_live_sacrebleu") else {
        return;
    };
    if version != s2s_metrics::SACREBLEU_VERSION {
        return; // the printed lines contain the version
    }
    let cases = cases();
    for (hyp, refs) in [
        ("hyp_short.fr", vec!["ref.fr"]),
        ("hyp_short.fr", vec!["ref.fr", "ref2.fr"]),
        ("hyp_long.fr", vec!["ref.fr"]),
        ("hyp_long.fr", vec!["ref.fr", "ref2.fr"]),
        ("hyp_reversed.fr", vec!["ref.fr"]),
        ("tiny_hyp.fr", vec!["tiny_ref.fr"]),
    ] {
        let mut args = vec!["-m", "sacrebleu"];
        args.extend(&refs);
        args.extend(["-i", hyp, "-m", "bleu", "chrf", "-f", "text", "-w", "6"]);
        let out = run_python(&py, &args, None);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        let find = |metric: &str| {
            cases
                .iter()
                .find(|c| {
                    c.hyp == hyp
                        && c.refs == refs
                        && match &c.metric {
                            Metric::Bleu(b) => metric == "bleu" && *b == BleuConfig::default(),
                            Metric::Chrf(ch) => metric == "chrf" && *ch == ChrfConfig::default(),
                        }
                })
                .unwrap_or_else(|| panic!("no default {metric} case for {hyp} {refs:?}"))
        };
        let ours = [
            compute(find("bleu")).with_signature(6),
            compute(find("chrf")).with_signature(6),
        ];
        assert_eq!(lines, ours, "sacrebleu {args:?}");
    }
}

/// A small deterministic generator (xorshift64*), to avoid a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Random text built from tricky pieces: entities, digits around `.`/`,`/`-`, Unicode
/// punctuation and symbols, Python-only whitespace (U+001C), `<skipped>`, `-\n`, mixed case.
fn random_lines(rng: &mut Rng, n: usize) -> Vec<String> {
    const PIECES: &[&str] = &[
        "Le",
        "chat",
        "été",
        "ÉTÉ",
        "l’été",
        "n'est-ce",
        "aujourd'hui",
        "pas",
        "«",
        "»",
        "\u{a0}",
        "\u{202f}",
        "!",
        "?",
        ";",
        ":",
        ",",
        ".",
        "...",
        "…",
        "3,5",
        "1.5",
        "2024.",
        "250\u{202f}000",
        "12-3",
        "-5",
        "a-b",
        "&quot;",
        "&amp;",
        "&lt;b&gt;",
        "&",
        "\"",
        "'",
        "(",
        ")",
        "[x]",
        "{y}",
        "$",
        "€",
        "½",
        "%",
        "+15",
        "–",
        "—",
        "“",
        "”",
        "@",
        "#",
        "/",
        "\\",
        "^",
        "_",
        "`",
        "~",
        "|",
        "<skipped>",
        "-\n",
        "\n",
        "\t",
        "\u{1c}",
        "Σ",
        "ΣΑΣ",
        "İ",
        "ß",
        "straße",
        "x",
        "y",
        "z",
        "1",
        "0",
        "AT&T",
    ];
    (0..n)
        .map(|_| {
            let len = rng.below(14);
            let mut s = String::new();
            for _ in 0..len {
                s.push_str(PIECES[rng.below(PIECES.len())]);
                if rng.below(3) > 0 {
                    s.push(' ');
                }
            }
            s
        })
        .collect()
}

/// Tokenizers, lowercasing and all metric variants on random text, against sacreBLEU's API.
#[test]
fn random_text_matches_live_sacrebleu() {
    let Some((py, _)) = sacrebleu_python("random_text_matches_live_sacrebleu") else {
        return;
    };
    let mut rng = Rng(0x5eed_2b1e_u64);
    let hyps = random_lines(&mut rng, 300);
    // References share most pieces with their hypothesis, so that n-grams match.
    let refs: Vec<Vec<String>> = (0..2)
        .map(|_| {
            hyps.iter()
                .zip(random_lines(&mut rng, hyps.len()))
                .map(|(h, r)| {
                    let cut = h.len() / 2;
                    let cut = (cut..=h.len()).find(|&i| h.is_char_boundary(i)).unwrap();
                    if rng.below(2) == 0 {
                        format!("{}{}", &h[..cut], r)
                    } else {
                        format!("{}{}", r, &h[cut..])
                    }
                })
                .collect()
        })
        .collect();

    let input = serde_json::json!({ "hyps": hyps, "refs": refs }).to_string();
    let code = r#"
import json, sys
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sacrebleu.tokenizers.tokenizer_intl import TokenizerV14International
from sacrebleu.tokenizers.tokenizer_char import TokenizerChar
d = json.loads(sys.stdin.buffer.read().decode("utf-8"))
hyps, refs = d["hyps"], d["refs"]
toks = {"13a": Tokenizer13a(), "intl": TokenizerV14International(), "char": TokenizerChar()}
out = {"tok": {k: [t(s) for s in hyps] for k, t in toks.items()},
       "lower": [s.lower() for s in hyps], "scores": {}}
metrics = {
    "bleu": BLEU(), "bleu_lc_intl": BLEU(lowercase=True, tokenize="intl"),
    "bleu_char": BLEU(tokenize="char"), "bleu_none_floor": BLEU(tokenize="none", smooth_method="floor"),
    "chrf": CHRF(), "chrfpp": CHRF(word_order=2), "chrf_lc_space_eps": CHRF(lowercase=True, whitespace=True, eps_smoothing=True),
}
for name, m in metrics.items():
    out["scores"][name + "_1ref"] = m.corpus_score(hyps, refs[:1]).score
    out["scores"][name + "_2ref"] = m.corpus_score(hyps, refs).score
print(json.dumps(out))
"#;
    let out = run_python(&py, &["-c", code], Some(&input));
    let json: Value = serde_json::from_str(&out).unwrap();

    for (name, tok) in [
        ("13a", Tokenizer::V13a),
        ("intl", Tokenizer::Intl),
        ("char", Tokenizer::Char),
    ] {
        for (h, want) in hyps.iter().zip(json["tok"][name].as_array().unwrap()) {
            assert_eq!(tok.tokenize(h), want.as_str().unwrap(), "{name} of {h:?}");
        }
    }
    for (h, want) in hyps.iter().zip(json["lower"].as_array().unwrap()) {
        assert_eq!(h.to_lowercase(), want.as_str().unwrap(), "lower() of {h:?}");
    }

    let bleu = |lowercase, tokenizer, smoothing| BleuConfig {
        lowercase,
        tokenizer,
        smoothing,
        ..BleuConfig::default()
    };
    use s2s_metrics::Smoothing;
    let bleus = [
        ("bleu", BleuConfig::default()),
        ("bleu_lc_intl", bleu(true, Tokenizer::Intl, Smoothing::Exp)),
        ("bleu_char", bleu(false, Tokenizer::Char, Smoothing::Exp)),
        (
            "bleu_none_floor",
            bleu(false, Tokenizer::None, Smoothing::Floor(0.1)),
        ),
    ];
    let chrfs = [
        ("chrf", ChrfConfig::default()),
        ("chrfpp", ChrfConfig::chrf_plus_plus()),
        (
            "chrf_lc_space_eps",
            ChrfConfig {
                lowercase: true,
                whitespace: true,
                eps_smoothing: true,
                ..ChrfConfig::default()
            },
        ),
    ];
    for nrefs in [1, 2] {
        let r = &refs[..nrefs];
        let mut ours: Vec<(&str, f64)> = Vec::new();
        for (name, c) in &bleus {
            ours.push((name, c.corpus_score(&hyps, r).unwrap().score));
        }
        for (name, c) in &chrfs {
            ours.push((name, c.corpus_score(&hyps, r).unwrap().score));
        }
        for (name, score) in ours {
            let key = format!("{name}_{nrefs}ref");
            let want = json["scores"][&key].as_f64().unwrap();
            // Keep the comparison meaningful: neither nothing nor everything matches.
            assert!(
                want > 5.0 && want < 95.0,
                "{key}: degenerate test data ({want})"
            );
            assert!(
                (score - want).abs() <= TOL,
                "{key}: {score} vs live sacreBLEU {want}"
            );
        }
    }
}

/// References per segment, a variable number of them (`corpus_score_grouped`), against
/// sacreBLEU given reference streams padded with `None`: scores and signatures (`nrefs:var`),
/// and `nrefs:2` when every segment has two.
#[test]
fn grouped_references_match_live_sacrebleu() {
    let Some((py, version)) = sacrebleu_python("grouped_references_match_live_sacrebleu") else {
        return;
    };
    let mut rng = Rng(0x0123_4567_89ab_cdef_u64);
    let hyps = random_lines(&mut rng, 200);
    let groups: Vec<Vec<String>> = hyps
        .iter()
        .map(|h| {
            let n = 1 + rng.below(3);
            let others = random_lines(&mut rng, n);
            others
                .into_iter()
                .map(|r| {
                    let cut = (h.len() / 2..=h.len())
                        .find(|&i| h.is_char_boundary(i))
                        .unwrap();
                    format!("{}{}", &h[..cut], r)
                })
                .collect()
        })
        .collect();
    let two: Vec<Vec<String>> = groups
        .iter()
        .map(|g| vec![g[0].clone(), g.last().unwrap().clone() + " x"])
        .collect();
    let input = serde_json::json!({ "hyps": hyps, "var": groups, "two": two }).to_string();
    let code = r#"
import json, sys
from sacrebleu.metrics import BLEU, CHRF
d = json.loads(sys.stdin.buffer.read().decode("utf-8"))
out = {}
for key in ("var", "two"):
    groups = d[key]
    k = max(len(g) for g in groups)
    streams = [[g[i] if i < len(g) else None for g in groups] for i in range(k)]
    for name, m in (("bleu", BLEU()), ("chrf", CHRF())):
        s = m.corpus_score(d["hyps"], streams)
        out[name + "_" + key] = [s.score, str(m.get_signature())]
print(json.dumps(out))
"#;
    let out = run_python(&py, &["-c", code], Some(&input));
    let json: Value = serde_json::from_str(&out).unwrap();
    for (key, refs, nrefs) in [("var", &groups, "nrefs:var|"), ("two", &two, "nrefs:2|")] {
        let bleu = BleuConfig::default()
            .corpus_score_grouped(&hyps, refs)
            .unwrap();
        let chrf = ChrfConfig::default()
            .corpus_score_grouped(&hyps, refs)
            .unwrap();
        for (name, score, sig) in [
            ("bleu", bleu.score, bleu.signature.clone()),
            ("chrf", chrf.score, chrf.signature.clone()),
        ] {
            let want = &json[format!("{name}_{key}")];
            let (want_score, want_sig) = (want[0].as_f64().unwrap(), want[1].as_str().unwrap());
            assert!(
                want_score > 5.0 && want_score < 95.0,
                "{name} {key}: {want_score}"
            );
            assert!(
                (score - want_score).abs() <= TOL,
                "{name} {key}: {score} vs live sacreBLEU {want_score}"
            );
            assert!(sig.starts_with(nrefs), "{sig}");
            assert!(
                same_signature(&sig, want_sig, &version),
                "{sig} vs {want_sig}"
            );
        }
    }
    // A segment without references, and a list per segment missing, are errors.
    let mut empty = groups.clone();
    empty[3].clear();
    assert!(matches!(
        BleuConfig::default().corpus_score_grouped(&hyps, &empty),
        Err(s2s_metrics::MetricsError::EmptyReferenceList { segment: 3 })
    ));
    assert!(matches!(
        ChrfConfig::default().corpus_score_grouped(&hyps, &groups[1..]),
        Err(s2s_metrics::MetricsError::GroupCountMismatch { .. })
    ));
}
