//! End-to-end tests of the `s2s` binary: train, decode, eval and input errors.

mod common;

use common::{s2s, text, train_tiny, train_tiny_with};
use std::path::Path;

#[test]
fn decode_is_independent_of_batch_size_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let model = train_tiny(dir.path());
    let words = [
        "abc",
        "",
        "jihgfedcba",
        "a",
        "cab",
        "hhhh",
        "",
        "bd",
        "efgab",
    ];
    let input: String = words.iter().map(|w| format!("{w}\n")).collect();
    let base = s2s(
        &[
            "decode",
            "--model",
            &model,
            "--batch-size",
            "1",
            "--workers",
            "1",
        ],
        input.as_bytes(),
    );
    assert!(base.status.success(), "{}", text(&base.stderr));
    let base_lines: Vec<String> = text(&base.stdout).lines().map(String::from).collect();
    assert_eq!(base_lines.len(), words.len());
    assert_eq!(base_lines[1], "");
    assert_eq!(base_lines[6], "");
    // Nor does it on the number of workers sharing the batches.
    for (size, workers) in [("2", "3"), ("3", "1"), ("64", "2")] {
        let out = s2s(
            &[
                "decode",
                "--model",
                &model,
                "--batch-size",
                size,
                "--workers",
                workers,
            ],
            input.as_bytes(),
        );
        assert_eq!(
            text(&out.stdout).lines().collect::<Vec<_>>(),
            base_lines,
            "batch size {size}, {workers} workers"
        );
    }
    let out = s2s(
        &["decode", "--model", &model, "--workers", "0"],
        input.as_bytes(),
    );
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("--workers must be at least 1"));
    // Beam search and sampling give the same outputs whatever the batch size too.
    for strategy in [
        &["--strategy", "beam", "--beam-size", "3"][..],
        &["--strategy", "sample", "--seed", "4", "--top-k", "3"][..],
    ] {
        let mut outs = Vec::new();
        for size in ["1", "4"] {
            let mut args = vec!["decode", "--model", &model, "--batch-size", size];
            args.extend_from_slice(strategy);
            let out = s2s(&args, input.as_bytes());
            assert!(out.status.success(), "{}", text(&out.stderr));
            outs.push(text(&out.stdout));
        }
        assert_eq!(outs[0], outs[1], "{strategy:?}");
        assert_eq!(outs[0].lines().count(), words.len());
    }
    // Reversed input order gives the same output per word.
    let reversed: String = words.iter().rev().map(|w| format!("{w}\n")).collect();
    let out = s2s(
        &["decode", "--model", &model, "--batch-size", "4"],
        reversed.as_bytes(),
    );
    let mut lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    lines.reverse();
    assert_eq!(lines, base_lines);
}

/// `s2s score` is the oracle of `s2s decode --scores`: every beam hypothesis scores what
/// forced decoding gives its tokens (with `<eos>`, or without for one cut off at --max-len);
/// a line without a tab is an error naming the line.
#[test]
fn score_agrees_with_beam_scores() {
    let dir = tempfile::tempdir().unwrap();
    let model = train_tiny(dir.path());
    let words = ["abc", "jihgfedcba", "cab", "hhhh", "efgab"];
    let input: String = words.iter().map(|w| format!("{w}\n")).collect();
    let max_len = "12";
    let decoded = s2s(
        &[
            "decode",
            "--model",
            &model,
            "--strategy",
            "beam",
            "--beam-size",
            "4",
            "--n-best",
            "3",
            "--max-len",
            max_len,
            "--scores",
        ],
        input.as_bytes(),
    );
    assert!(decoded.status.success(), "{}", text(&decoded.stderr));
    let mut pairs = Vec::new();
    let mut scores = Vec::new();
    for (word, block) in words.iter().zip(text(&decoded.stdout).split("\n\n")) {
        for line in block.lines() {
            let (hyp, score) = line.rsplit_once('\t').unwrap();
            pairs.push(format!("{word}\t{hyp}\n"));
            scores.push((hyp.chars().count(), score.parse::<f64>().unwrap()));
        }
    }
    assert_eq!(scores.len(), 3 * words.len());
    let scored = s2s(
        &["score", "--model", &model, "--per-token"],
        pairs.concat().as_bytes(),
    );
    assert!(scored.status.success(), "{}", text(&scored.stderr));
    let lines: Vec<String> = text(&scored.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), scores.len());
    for (line, (len, want)) in lines.iter().zip(&scores) {
        let (total, each) = line.split_once('\t').unwrap();
        let total: f64 = total.parse().unwrap();
        let each: Vec<f64> = each.split(' ').map(|v| v.parse().unwrap()).collect();
        assert_eq!(each.len(), len + 1, "{line}");
        assert!((each.iter().sum::<f64>() - total).abs() < 1e-5, "{line}");
        let cut = total - each[*len];
        let close = |x: f64| (x - want).abs() <= 1e-4 * (1.0 + want.abs());
        assert!(
            close(total) || (*len == 12 && close(cut)),
            "{line}: beam said {want}"
        );
    }
    let bad = s2s(&["score", "--model", &model], b"abc\tcba\nabc cba\n");
    assert!(
        !bad.status.success()
            && text(&bad.stderr).contains("stdin:2: expected `source<TAB>target`"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn decode_warns_on_unknown_symbols_and_rejects_bad_utf8() {
    let dir = tempfile::tempdir().unwrap();
    let model = train_tiny(dir.path());
    let out = s2s(&["decode", "--model", &model], b"ab\nxyz!\n");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).lines().count(), 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("stdin:2") && err.contains("<unk>") && err.contains("\"z\""),
        "{err}"
    );
    let out = s2s(&["decode", "--model", &model], b"ab\n\xff\xfe\n");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("stdin:2: invalid UTF-8"),
        "{}",
        text(&out.stderr)
    );

    // n-best lists with scores, and alignments.
    let align = dir.path().join("align.jsonl");
    let out = s2s(
        &[
            "decode",
            "--model",
            &model,
            "--strategy",
            "beam",
            "--beam-size",
            "4",
            "--n-best",
            "2",
            "--scores",
            "--alignments",
            align.to_str().unwrap(),
        ],
        b"abc

ba
",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let blocks: Vec<&str> = stdout.split("\n\n").filter(|b| !b.is_empty()).collect();
    assert_eq!(blocks.len(), 3, "{stdout:?}");
    for line in blocks[0].lines() {
        let (_, score) = line.rsplit_once('\t').unwrap();
        assert!(score.parse::<f32>().unwrap() <= 0.0);
    }
    assert_eq!(blocks[0].lines().count(), 2);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&align)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["source"].as_array().unwrap().len(), 3);
    for l in &lines {
        let rows = l["attention"].as_array().unwrap();
        assert_eq!(rows.len(), l["output"].as_array().unwrap().len(), "{l}");
    }
    let png = dir.path().join("align.png");
    let draw = |index: &str| {
        s2s(
            &[
                "align",
                "--alignments",
                align.to_str().unwrap(),
                "--index",
                index,
                "--out",
                png.to_str().unwrap(),
            ],
            b"",
        )
    };
    let out = draw("2");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::read(&png).unwrap().starts_with(b"\x89PNG"));
    let out = draw("7");
    assert!(
        !out.status.success() && text(&out.stderr).contains("no record with index 7 (3 records)"),
        "{}",
        text(&out.stderr)
    );
    let out = s2s(
        &[
            "decode",
            "--model",
            &model,
            "--strategy",
            "beam",
            "--beam-size",
            "2",
            "--n-best",
            "3",
        ],
        b"ab
",
    );
    assert!(
        !out.status.success()
            && text(&out.stderr).contains("--n-best (3) cannot exceed --beam-size (2)")
    );

    // eval on a TSV file, plain and JSON.
    let test = dir.path().join("test.tsv");
    std::fs::write(&test, "abc\tcba\nba\tab\n").unwrap();
    let out = s2s(
        &[
            "eval",
            "--model",
            &model,
            "--test",
            test.to_str().unwrap(),
            "--json",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["scores"]["count"], 2);
}

#[test]
fn bad_training_data_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.tsv");
    let valid = dir.path().join("valid.tsv");
    std::fs::write(&train, "a b\tc d\ne f\n").unwrap();
    std::fs::write(&valid, "a\tc\n").unwrap();
    let out = s2s(
        &[
            "train",
            "--task",
            "tsv",
            "--train",
            train.to_str().unwrap(),
            "--valid",
            valid.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("train.tsv:2: expected `source<TAB>target`, found no tab"),
        "{err}"
    );
    // A backend left out of the build names the feature that brings it.
    let missing = [
        ("tch", cfg!(feature = "tch")),
        ("wgpu", cfg!(feature = "wgpu")),
    ]
    .into_iter()
    .find(|(_, compiled)| !compiled);
    if let Some((backend, _)) = missing {
        let out = s2s(&["--backend", backend, "decode", "--model", "x"], b"");
        let err = text(&out.stderr);
        assert!(
            out.status.code() == Some(1) && err.contains(&format!("--features {backend}")),
            "{err}"
        );
    }
    // A device the backend does not have is an error naming it.
    let out = s2s(&["--device", "cuda:7", "decode", "--model", "x"], b"");
    let err = text(&out.stderr);
    assert!(
        out.status.code() == Some(1) && err.contains("invalid device \"cuda:7\" for backend flex"),
        "{err}"
    );
    if cfg!(feature = "tch") {
        let out = s2s(
            &[
                "--backend",
                "tch",
                "--device",
                "cuda:7",
                "decode",
                "--model",
                "x",
            ],
            b"",
        );
        let err = text(&out.stderr);
        assert!(
            out.status.code() == Some(1) && err.contains("cuda:7"),
            "{err}"
        );
    }
    let out = s2s(
        &[
            "decode",
            "--model",
            dir.path().join("none").to_str().unwrap(),
        ],
        b"",
    );
    assert!(!out.status.success() && text(&out.stderr).contains("not a model folder"));
}

/// A small French-like parallel corpus: 120 pairs of short sentences, with no-break spaces.
fn tiny_corpus() -> String {
    let subjects = [
        ("I am", "Je suis"),
        ("He is", "Il est"),
        ("We are", "Nous sommes"),
    ];
    let words = [
        ("tired", "fatigué"),
        ("happy", "content"),
        ("here", "là"),
        ("ready", "prêt"),
        ("late", "en retard"),
    ];
    let mut out = String::new();
    for i in 0..120 {
        let (s, t) = subjects[i % subjects.len()];
        let (w, v) = words[(i / 3) % words.len()];
        let bang = if i % 2 == 0 { "!" } else { "." };
        let fr_bang = if bang == "!" { "\u{202F}!" } else { "." };
        out.push_str(&format!("{s} {w} {i}{bang}\t{t} {v} {i}{fr_bang}\n"));
    }
    out
}

#[test]
fn split_train_bpe_translate_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.tsv");
    std::fs::write(&corpus, tiny_corpus()).unwrap();
    let data = dir.path().join("data");
    let out = s2s(
        &[
            "split",
            "--input",
            corpus.to_str().unwrap(),
            "--out",
            data.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let count = |name: &str| {
        std::fs::read_to_string(data.join(name))
            .unwrap()
            .lines()
            .count()
    };
    let (train, valid, test) = (count("train.tsv"), count("valid.tsv"), count("test.tsv"));
    assert_eq!(train + valid + test, 120);
    assert!(
        train > 90 && valid > 0 && test > 0,
        "{train} {valid} {test}"
    );

    let model = dir.path().join("m");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let out = s2s(
        &[
            "train",
            "--task",
            "tsv",
            "--train",
            &path(&data.join("train.tsv")),
            "--valid",
            &path(&data.join("valid.tsv")),
            "--test",
            &path(&data.join("test.tsv")),
            "--source-tokenizer",
            "bpe",
            "--target-tokenizer",
            "bpe",
            "--bpe-vocab",
            "60",
            "--epochs",
            "2",
            "--embed",
            "8",
            "--hidden",
            "16",
            "--decoder-hidden",
            "16",
            "--attention-dim",
            "16",
            "--no-progress",
            "--out",
            &path(&model),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("(bpe("), "{err}");
    // The trained tokenizer travels inside the model folder.
    let config = std::fs::read_to_string(model.join("best/config.json")).unwrap();
    assert!(config.contains("\"bpe\""));

    // translate == decode, whatever the chunk size, from a file to a file.
    let inputs = "I am tired 7!\nWe are here 8.\n\nHe is ready 100!\n";
    let src = dir.path().join("in.txt");
    std::fs::write(&src, inputs).unwrap();
    let decoded = s2s(&["decode", "--model", &path(&model)], inputs.as_bytes());
    assert!(decoded.status.success(), "{}", text(&decoded.stderr));
    for chunk in ["1", "3", "1000"] {
        let dst = dir.path().join(format!("out{chunk}.txt"));
        let out = s2s(
            &[
                "translate",
                "--model",
                &path(&model),
                "-i",
                &path(&src),
                "-o",
                &path(&dst),
                "--chunk",
                chunk,
                "--batch-size",
                "2",
            ],
            b"",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(
            std::fs::read_to_string(&dst).unwrap(),
            text(&decoded.stdout),
            "chunk {chunk}"
        );
        assert_eq!(text(&decoded.stdout).lines().count(), 4);
    }

    // eval reports BLEU and chrF with sacreBLEU signatures.
    let out = s2s(
        &[
            "eval",
            "--model",
            &path(&model),
            "--test",
            &path(&data.join("test.tsv")),
            "--json",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bleu = json["bleu"]["score"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&bleu));
    assert!(json["bleu"]["signature"]
        .as_str()
        .unwrap()
        .contains("tok:13a|smooth:exp|version:2.6.0"));
    assert!(json["chrf"]["signature"].as_str().unwrap().contains("nc:6"));

    // A test set with repeated sources: per-line scores each line against its own target,
    // grouped one output per distinct source against all of its targets (variable numbers:
    // nrefs:var). Both equal s2s-metrics on the model's outputs (s2s-metrics is compared
    // with sacreBLEU itself in its live tests).
    let pairs = [
        ("I am tired 7!", "Je suis fatigué 7 !"),
        ("We are here 8.", "Nous sommes là 8."),
        ("I am tired 7!", "Je suis fatiguée 7 !"),
        ("He is ready 100!", "Il est prêt 100 !"),
        ("I am tired 7!", "Je suis épuisé 7 !"),
        ("We are here 8.", "Nous sommes ici 8."),
    ];
    let tsv: String = pairs.iter().map(|(a, b)| format!("{a}\t{b}\n")).collect();
    let test = dir.path().join("repeated.tsv");
    std::fs::write(&test, tsv).unwrap();
    let sources = ["I am tired 7!", "We are here 8.", "He is ready 100!"];
    let out = s2s(
        &["decode", "--model", &path(&model)],
        sources.join("\n").as_bytes(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let outputs: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    let output_of = |src: &str| outputs[sources.iter().position(|s| *s == src).unwrap()].clone();
    let per_line_hyps: Vec<String> = pairs.iter().map(|(a, _)| output_of(a)).collect();
    let per_line_refs: Vec<&str> = pairs.iter().map(|(_, b)| *b).collect();
    let groups: Vec<Vec<&str>> = sources
        .iter()
        .map(|s| pairs.iter().filter(|p| p.0 == *s).map(|p| p.1).collect())
        .collect();
    let want = [
        (
            "per-line",
            s2s_metrics::corpus_bleu(&per_line_hyps, &[&per_line_refs]).unwrap(),
            s2s_metrics::corpus_chrf(&per_line_hyps, &[&per_line_refs]).unwrap(),
            "nrefs:1|",
        ),
        (
            "grouped",
            s2s_metrics::BleuConfig::default()
                .corpus_score_grouped(&outputs, &groups)
                .unwrap(),
            s2s_metrics::ChrfConfig::default()
                .corpus_score_grouped(&outputs, &groups)
                .unwrap(),
            "nrefs:var|",
        ),
    ];
    for (mode, bleu, chrf, nrefs) in want {
        let out = s2s(
            &[
                "eval",
                "--model",
                &path(&model),
                "--test",
                &path(&test),
                "--references",
                mode,
                "--json",
            ],
            b"",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["references"], mode);
        assert!(
            (json["bleu"]["score"].as_f64().unwrap() - bleu.score).abs() < 1e-9,
            "{mode}"
        );
        assert!(
            (json["chrf"]["score"].as_f64().unwrap() - chrf.score).abs() < 1e-9,
            "{mode}"
        );
        assert_eq!(json["bleu"]["signature"], bleu.signature(), "{mode}");
        assert!(bleu.signature().starts_with(nrefs), "{}", bleu.signature());
    }

    // A missing input file is a clear error.
    let out = s2s(
        &[
            "translate",
            "--model",
            &path(&model),
            "-i",
            "/nonexistent.txt",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent.txt: cannot open"));
}

/// `--keep-checkpoints` keeps the last validations' models, `--average-last` averages them
/// into averaged/ (validated, and tested beside best/), `s2s average` does the same from the
/// command line, and `--model` repeated decodes with an ensemble; models with other
/// vocabularies are refused, naming the folder.
#[test]
fn checkpoints_averaging_and_ensembles() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_tiny_with(
        dir.path(),
        &[
            "--valid-every",
            "2",
            "--keep-checkpoints",
            "3",
            "--average-last",
            "3",
        ],
    );
    let run = Path::new(&run);
    let mut kept: Vec<String> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 3, "{kept:?}");
    assert!(kept.iter().all(|k| k.starts_with("step-")), "{kept:?}");
    assert!(run.join("averaged/model.safetensors").is_file());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let averaged: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["event"] == "averaged")
        .collect();
    assert_eq!(averaged.len(), 1);
    assert_eq!(averaged[0]["checkpoints"].as_array().unwrap().len(), 3);
    assert!(averaged[0]["wer"].as_f64().is_some());

    // The same average from the command line, into a new folder only.
    let ckpts: Vec<String> = kept
        .iter()
        .map(|k| run.join("checkpoints").join(k).display().to_string())
        .collect();
    let again = dir.path().join("again");
    let mut args = vec!["average"];
    args.extend(ckpts.iter().map(String::as_str));
    args.extend(["--out", again.to_str().unwrap()]);
    let out = s2s(&args, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(again.join("model.safetensors")).unwrap(),
        std::fs::read(run.join("averaged/model.safetensors")).unwrap()
    );
    let out = s2s(&args, b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("exists already"),
        "{}",
        text(&out.stderr)
    );

    // An ensemble of the best and the averaged model decodes every line.
    let words = "abc\nhello\n\nzyx\n";
    let best = run.to_str().unwrap();
    let averaged = again.to_str().unwrap();
    for strategy in [
        &["--strategy", "greedy"][..],
        &["--strategy", "beam", "--beam-size", "3"][..],
    ] {
        let mut args = vec!["decode", "--model", best, "--model", averaged];
        args.extend(strategy);
        let out = s2s(&args, words.as_bytes());
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).lines().count(), 4);
    }

    // A model whose target vocabulary differs (two tokens swapped) is refused.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    for entry in std::fs::read_dir(&again).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), other.join(entry.file_name())).unwrap();
    }
    let vocab = std::fs::read_to_string(other.join("target_vocab.json")).unwrap();
    let swapped = vocab
        .replacen("\"a\"", "\"@\"", 1)
        .replacen("\"b\"", "\"a\"", 1)
        .replacen("\"@\"", "\"b\"", 1);
    assert_ne!(swapped, vocab);
    std::fs::write(other.join("target_vocab.json"), swapped).unwrap();
    let out = s2s(
        &[
            "decode",
            "--model",
            averaged,
            "--model",
            other.to_str().unwrap(),
        ],
        words.as_bytes(),
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("other")
            && err.contains("cannot be ensembled")
            && err.contains("target vocabulary"),
        "{err}"
    );
}

/// `s2s export` writes the weights under PyTorch's names; `s2s import` makes a model folder of
/// them again, which decodes exactly as the original. Bad files and mismatched configurations
/// are errors that name the file and the tensor, and nothing is overwritten.
#[test]
fn export_and_import_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let run = train_tiny(dir.path());
    let file = dir.path().join("weights.safetensors");
    let file_s = file.to_str().unwrap();
    let out = s2s(&["export", "--model", &run, "--out", file_s], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = std::fs::read(&file).unwrap();
    // A safetensors header names the tensors as PyTorch's modules do.
    let header = text(&bytes[8..8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize]);
    assert!(
        header.contains("encoder.rnn.weight_ih_l0_reverse")
            && header.contains("decoder.layers.0.weight_hh"),
        "{header}"
    );
    let again = s2s(&["export", "--model", &run, "--out", file_s], b"");
    assert!(!again.status.success() && text(&again.stderr).contains("exists already"));
    assert_eq!(std::fs::read(&file).unwrap(), bytes);

    let config = Path::new(&run).join("best/config.json");
    let imported = dir.path().join("imported");
    let args = |from: &str, out: &Path| {
        vec![
            "import".to_string(),
            "--from".into(),
            from.into(),
            "--config".into(),
            config.to_str().unwrap().into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let run_args = |a: Vec<String>| s2s(&a.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    let out = run_args(args(file_s, &imported));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let input = b"abc\ncabba\nbbbbac\n";
    for strategy in [["--strategy", "greedy"], ["--strategy", "beam"]] {
        let decode = |model: &str| {
            let mut a = vec!["decode", "--model", model, "--scores", "--n-best", "2"];
            a.extend(strategy);
            let out = s2s(&a, input);
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout)
        };
        assert_eq!(
            decode(&run),
            decode(imported.to_str().unwrap()),
            "{strategy:?}"
        );
    }

    // A truncated file, and weights that do not fit the configuration.
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let out = run_args(args(truncated.to_str().unwrap(), &dir.path().join("x")));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("truncated.safetensors"),
        "{}",
        text(&out.stderr)
    );
    assert!(!dir.path().join("x").exists());
    let wider = dir.path().join("wider");
    let other = train_tiny_with(&wider, &["--hidden", "12"]);
    let other_file = dir.path().join("other.safetensors");
    let out = s2s(
        &[
            "export",
            "--model",
            &other,
            "--out",
            other_file.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run_args(args(other_file.to_str().unwrap(), &dir.path().join("y")));
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("other.safetensors") && err.contains("has shape"),
        "{err}"
    );
    assert!(!dir.path().join("y").exists());
    let out = run_args(args(file_s, &imported));
    assert!(!out.status.success() && text(&out.stderr).contains("exists already"));

    // The same through PyTorch's .pt files (the format from the extension of --out).
    let pt = dir.path().join("weights.pt");
    let pt_s = pt.to_str().unwrap();
    let out = s2s(&["export", "--model", &run, "--out", pt_s], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let state = s2s_nn::torch_file::read_state_dict(&std::fs::read(&pt).unwrap()).unwrap();
    assert_eq!(
        state,
        s2s_nn::weights::from_safetensors(&bytes).unwrap(),
        "the .pt and safetensors exports hold the same tensors"
    );
    let from_pt = dir.path().join("from-pt");
    let out = run_args(args(pt_s, &from_pt));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(from_pt.join("model.safetensors")).unwrap(),
        std::fs::read(imported.join("model.safetensors")).unwrap()
    );
    let out = s2s(
        &[
            "export",
            "--model",
            &run,
            "--out",
            dir.path().join("w.bin").to_str().unwrap(),
        ],
        b"",
    );
    assert!(!out.status.success() && text(&out.stderr).contains("--format"));

    // Bad .pt files: cut short, a tensor missing, one of another shape; each names the
    // file (and the tensor), and writes nothing.
    let pt_bytes = std::fs::read(&pt).unwrap();
    let mut missing = state.clone();
    missing.remove("attention.score.weight");
    let mut reshaped = state.clone();
    let bias = reshaped.get_mut("output.bias").unwrap();
    bias.values.pop();
    bias.shape[0] -= 1;
    let cases = [
        (
            "cut.pt",
            pt_bytes[..pt_bytes.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "missing.pt",
            s2s_nn::torch_file::write_state_dict(&missing).unwrap(),
            "tensor attention.score.weight",
        ),
        (
            "reshaped.pt",
            s2s_nn::torch_file::write_state_dict(&reshaped).unwrap(),
            "tensor output.bias has shape",
        ),
    ];
    for (name, content, says) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let out_dir = dir.path().join(format!("{name}.out"));
        let out = run_args(args(path.to_str().unwrap(), &out_dir));
        let err = text(&out.stderr);
        assert!(
            !out.status.success() && err.contains(name) && err.contains(says),
            "{name}: {err}"
        );
        assert!(!out_dir.exists(), "{name}");
    }
}

/// A model folder of layout 1 (`model.mpk`), written by s2s before model.safetensors (commit
/// 37dbbdd; `crates/s2s-train/tests/fixtures/format1`, with the outputs that build decoded), still decodes
/// the same; `s2s convert` brings it to layout 2 in place, after which it decodes the same
/// again, and a training run folder's model folders are converted together.
#[test]
fn format1_folders_load_and_convert() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../s2s-train/tests/fixtures/format1");
    let dir = tempfile::tempdir().unwrap();
    let copy = |to: &Path| {
        std::fs::create_dir_all(to).unwrap();
        for f in [
            "config.json",
            "model.mpk",
            "source_vocab.json",
            "target_vocab.json",
        ] {
            std::fs::copy(fixture.join(f), to.join(f)).unwrap();
        }
    };
    let model = dir.path().join("model");
    copy(&model);
    let input = std::fs::read(fixture.join("input.txt")).unwrap();
    let decode = |extra: &[&str]| {
        let mut a = vec!["decode", "--model", model.to_str().unwrap()];
        a.extend(extra);
        let out = s2s(&a, &input);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let beam = [
        "--strategy",
        "beam",
        "--beam-size",
        "4",
        "--n-best",
        "2",
        "--scores",
    ];
    let expected_greedy = std::fs::read_to_string(fixture.join("expected-greedy.txt")).unwrap();
    let expected_beam = std::fs::read_to_string(fixture.join("expected-beam.txt")).unwrap();
    assert_eq!(decode(&[]), expected_greedy);
    assert_eq!(decode(&beam), expected_beam);

    let out = s2s(&["convert", "--model", model.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!model.join("model.mpk").exists());
    assert!(model.join("model.safetensors").is_file());
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    assert!(config.contains("\"format\": 2"), "{config}");
    assert_eq!(decode(&[]), expected_greedy);
    assert_eq!(decode(&beam), expected_beam);
    let out = s2s(&["convert", "--model", model.to_str().unwrap()], b"");
    assert!(out.status.success() && text(&out.stderr).contains("already format 2"));

    // A run folder: best/ and every checkpoint.
    let run = dir.path().join("run");
    copy(&run.join("best"));
    copy(&run.join("checkpoints/step-00000100"));
    std::fs::write(run.join("config.json"), r#"{"s2s_run": 1}"#).unwrap();
    let out = s2s(&["convert", "--model", run.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    for sub in ["best", "checkpoints/step-00000100"] {
        assert!(run.join(sub).join("model.safetensors").is_file(), "{sub}");
        assert!(!run.join(sub).join("model.mpk").exists(), "{sub}");
    }
    assert_eq!(
        std::fs::read(run.join("best/model.safetensors")).unwrap(),
        std::fs::read(model.join("model.safetensors")).unwrap()
    );
}
