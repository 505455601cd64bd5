//! Invariants (proptest) and edge cases of BLEU and chrF.

use proptest::prelude::*;
use s2s_metrics::{
    corpus_bleu, corpus_chrf, sentence_bleu, sentence_chrf, BleuConfig, BleuStats, ChrfConfig,
    ChrfStats, MetricsError, Smoothing, Tokenizer,
};

const WORDS: &[&str] = &[
    "le",
    "chat",
    "Le",
    "été",
    "l’été",
    "n'est-ce",
    "pas",
    "«",
    "»",
    "!",
    "?",
    "\u{202f}!",
    "3,5",
    "2024.",
    "&amp;",
    "&quot;",
    "AT&T",
    "Où",
    "est",
    "la",
    "bibliothèque",
    "-5",
    "12-3",
    "€",
    "(a)",
    "x.",
    "Ça",
    "coûte",
    "combien",
];

fn sentence(min: usize, max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDS), min..max).prop_map(|w| w.join(" "))
}

fn corpus(min_words: usize) -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(sentence(min_words, 12), 1..8)
}

fn bleu_configs() -> impl Strategy<Value = BleuConfig> {
    (
        any::<bool>(),
        prop::sample::select(Tokenizer::ALL.to_vec()),
        prop::sample::select(vec![
            Smoothing::Exp,
            Smoothing::None,
            Smoothing::Floor(0.1),
            Smoothing::AddK(1.0),
        ]),
        1usize..5,
        any::<bool>(),
    )
        .prop_map(
            |(lowercase, tokenizer, smoothing, max_ngram_order, effective_order)| BleuConfig {
                lowercase,
                tokenizer,
                smoothing,
                max_ngram_order,
                effective_order,
            },
        )
}

fn chrf_configs() -> impl Strategy<Value = ChrfConfig> {
    (
        1usize..7,
        0usize..3,
        1u32..4,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(char_order, word_order, beta, lowercase, whitespace, eps_smoothing)| ChrfConfig {
                char_order,
                word_order,
                beta,
                lowercase,
                whitespace,
                eps_smoothing,
            },
        )
}

proptest! {
    #[test]
    fn identical_hypotheses_score_100(refs in corpus(4)) {
        let bleu = corpus_bleu(&refs, &[&refs])?;
        prop_assert!((bleu.score - 100.0).abs() < 1e-9, "BLEU {}", bleu.score);
        prop_assert_eq!(bleu.bp, 1.0);
        prop_assert_eq!(&bleu.counts, &bleu.totals);
        let chrf = corpus_chrf(&refs, &[&refs])?;
        prop_assert!((chrf.score - 100.0).abs() < 1e-9, "chrF {}", chrf.score);
        let chrfpp = ChrfConfig::chrf_plus_plus().corpus_score(&refs, &[&refs])?;
        prop_assert!((chrfpp.score - 100.0).abs() < 1e-9, "chrF++ {}", chrfpp.score);
    }

    #[test]
    fn a_hypothesis_among_its_references_scores_100(hyps in corpus(4), seed in any::<u64>()) {
        // The other reference stream is the hypotheses shifted by one line.
        let other: Vec<String> = (0..hyps.len())
            .map(|i| hyps[(i + 1 + seed as usize) % hyps.len()].clone())
            .collect();
        for refs in [[&other, &hyps], [&hyps, &other]] {
            let bleu = corpus_bleu(&hyps, &refs)?;
            prop_assert!((bleu.score - 100.0).abs() < 1e-9, "BLEU {}", bleu.score);
            let chrf = corpus_chrf(&hyps, &refs)?;
            prop_assert!((chrf.score - 100.0).abs() < 1e-9, "chrF {}", chrf.score);
        }
    }

    #[test]
    fn scores_are_between_0_and_100(
        hyps in prop::collection::vec(sentence(0, 10), 0..6),
        seed in any::<u64>(),
        bleu_config in bleu_configs(),
        chrf_config in chrf_configs(),
    ) {
        let refs: Vec<String> = (0..hyps.len())
            .map(|i| hyps[(i + seed as usize) % hyps.len()].to_uppercase())
            .collect();
        let bleu = bleu_config.corpus_score(&hyps, &[&refs])?;
        prop_assert!((0.0..=100.0 + 1e-9).contains(&bleu.score), "BLEU {}", bleu.score);
        prop_assert!((0.0..=1.0).contains(&bleu.bp));
        prop_assert!(bleu.precisions.iter().all(|p| (0.0..=100.0).contains(p)));
        prop_assert!(bleu.counts.iter().zip(&bleu.totals).all(|(c, t)| c <= t));
        let chrf = chrf_config.corpus_score(&hyps, &[&refs])?;
        prop_assert!((0.0..=100.0 + 1e-9).contains(&chrf.score), "chrF {}", chrf.score);
    }

    #[test]
    fn corpus_scores_come_from_summed_segment_statistics(
        hyps in corpus(0),
        refs in corpus(0),
        bleu_config in bleu_configs(),
        chrf_config in chrf_configs(),
    ) {
        let n = hyps.len().min(refs.len());
        let (hyps, refs) = (&hyps[..n], &refs[..n]);

        let mut bleu_sum = BleuStats::zeros(bleu_config.max_ngram_order);
        let mut chrf_sum = ChrfStats::zeros(chrf_config.n_orders());
        for (h, r) in hyps.iter().zip(refs) {
            bleu_sum.add(&bleu_config.segment_stats(h, &[r])?);
            chrf_sum.add(&chrf_config.segment_stats(h, &[r])?);
        }
        let bleu = bleu_config.corpus_score(hyps, &[refs])?;
        prop_assert_eq!(&bleu_config.corpus_stats(hyps, &[refs])?, &bleu_sum);
        prop_assert_eq!(&bleu_config.score_from_stats(&bleu_sum, 1)?, &bleu);
        let chrf = chrf_config.corpus_score(hyps, &[refs])?;
        prop_assert_eq!(&chrf.stats, &chrf_sum);
        prop_assert_eq!(chrf_config.score_from_stats(&chrf_sum, 1)?.score, chrf.score);
    }

    #[test]
    fn sentence_score_is_a_corpus_of_one(h in sentence(0, 9), r in sentence(0, 9)) {
        prop_assert_eq!(sentence_bleu(&h, &[&r])?, corpus_bleu(&[&h], &[[&r]])?);
        prop_assert_eq!(sentence_chrf(&h, &[&r])?, corpus_chrf(&[&h], &[[&r]])?);
    }
}

#[test]
fn empty_corpus_scores_zero() {
    let none: [&str; 0] = [];
    let bleu = corpus_bleu(&none, &[none]).unwrap();
    assert_eq!(bleu.score, 0.0);
    assert_eq!((bleu.sys_len, bleu.ref_len), (0, 0));
    assert_eq!(bleu.counts, vec![0; 4]);
    assert_eq!(
        bleu.to_string(),
        "BLEU = 0.00 0.0/0.0/0.0/0.0 (BP = 1.000 ratio = 0.000 hyp_len = 0 ref_len = 0)"
    );
    assert_eq!(corpus_chrf(&none, &[none]).unwrap().score, 0.0);
    let eps = ChrfConfig {
        eps_smoothing: true,
        ..ChrfConfig::default()
    };
    assert_eq!(eps.corpus_score(&none, &[none]).unwrap().score, 0.0);
}

#[test]
fn mismatched_line_counts_are_a_clear_error() {
    let hyps = ["a b c d", "e f g h", "i j k l"];
    let refs = vec![
        vec!["a b c d", "e f g h", "i j k l"],
        vec!["a b c d", "e f g h"],
    ];
    let err = corpus_bleu(&hyps, &refs).unwrap_err();
    assert_eq!(
        err,
        MetricsError::LengthMismatch {
            stream: 1,
            expected: 3,
            found: 2
        }
    );
    assert_eq!(
        err.to_string(),
        "reference stream 1 (0-based) has 2 lines but there are 3 hypotheses: every reference \
         stream needs exactly one line per hypothesis"
    );
    assert_eq!(corpus_chrf(&hyps, &refs).unwrap_err(), err);

    let no_streams: [[&str; 3]; 0] = [];
    assert_eq!(
        corpus_bleu(&hyps, &no_streams).unwrap_err(),
        MetricsError::NoReferences
    );
    let no_refs: [&str; 0] = [];
    assert_eq!(
        sentence_chrf("a", &no_refs).unwrap_err(),
        MetricsError::NoReferences
    );
}

/// Values from sacreBLEU 2.6.0:
/// `BLEU().sentence_score(h, [r])`, `BLEU(effective_order=True).sentence_score(h, [r])`,
/// `CHRF().sentence_score(h, [r])`.
#[test]
fn sentence_level_edge_cases() {
    // Empty hypothesis: no matches, BP 0.
    let s = sentence_bleu("", &["Le chat dort."]).unwrap();
    assert_eq!((s.score, s.bp, s.sys_len, s.ref_len), (0.0, 0.0, 0, 4));
    assert_eq!(sentence_chrf("", &["Le chat dort."]).unwrap().score, 0.0);

    // Fewer than four tokens: 0 without effective order, as sacreBLEU's BLEU() gives.
    let r = ["Merci beaucoup."];
    assert_eq!(sentence_bleu("Merci beaucoup", &r).unwrap().score, 0.0);
    let eff = BleuConfig {
        effective_order: true,
        ..BleuConfig::default()
    };
    let s = eff.sentence_score("Merci beaucoup", &r).unwrap();
    // BLEU(effective_order=True).sentence_score('Merci beaucoup', ['Merci beaucoup.']).score
    assert!((s.score - 60.653065971263366).abs() < 1e-12, "{}", s.score);
    assert_eq!(
        s.signature(),
        "nrefs:1|case:mixed|eff:yes|tok:13a|smooth:exp|version:2.6.0"
    );

    // Both empty.
    assert_eq!(sentence_bleu("", &[""]).unwrap().score, 0.0);
    assert_eq!(sentence_chrf("", &[""]).unwrap().score, 0.0);

    // Identical sentence.
    let s = sentence_bleu("Où est la bibliothèque ?", &["Où est la bibliothèque ?"]).unwrap();
    assert!((s.score - 100.0).abs() < 1e-9);
}

#[test]
fn results_and_configs_serialise() {
    let score = corpus_bleu(&["Le chat est assis ."], &[["Le chat est assis ."]]).unwrap();
    let json = serde_json::to_string(&score).unwrap();
    assert!(json
        .contains("\"signature\":\"nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0\""));
    assert_eq!(
        serde_json::from_str::<s2s_metrics::BleuScore>(&json).unwrap(),
        score
    );
    let config = BleuConfig {
        tokenizer: Tokenizer::Intl,
        smoothing: Smoothing::Floor(0.5),
        ..BleuConfig::default()
    };
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(
        json,
        r#"{"lowercase":false,"tokenizer":"intl","smoothing":{"floor":0.5},"max_ngram_order":4,"effective_order":false}"#
    );
    assert_eq!(serde_json::from_str::<BleuConfig>(&json).unwrap(), config);
    // Missing fields take sacreBLEU's defaults.
    assert_eq!(
        serde_json::from_str::<ChrfConfig>(r#"{"word_order":2}"#).unwrap(),
        ChrfConfig::chrf_plus_plus()
    );
}
