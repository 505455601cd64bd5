//! This crate against numbers recorded from sacreBLEU 2.6.0 (no Python needed).
//!
//! The cases (files and settings) are in `tests/data/cases.json`. The table below was produced,
//! from the workspace root, by
//!
//! ```text
//! .venv/bin/python crates/s2s-metrics/tests/data/sacrebleu_reference.py \
//!     crates/s2s-metrics/tests/data/cases.json --rust
//! ```
//!
//! which runs `sacrebleu.metrics.BLEU(**args)` / `CHRF(**args)` `.corpus_score(hyps, refs)`
//! (sacreBLEU 2.6.0) on each case. `sacrebleu_live.rs` re-runs it when a Python with sacreBLEU
//! is available.

mod common;

use common::{cases, compute, Computed};

/// Per-metric recorded statistics.
enum Detail {
    Bleu {
        sys_len: u64,
        ref_len: u64,
        counts: &'static [u64],
        totals: &'static [u64],
    },
    /// `[hyp, ref, match]` per order.
    Chrf { stats: &'static [[u64; 3]] },
}

struct Expected {
    name: &'static str,
    score: f64,
    signature: &'static str,
    detail: Detail,
}

/// Scores are compared to this absolute tolerance (they agree to the last bit on x86-64 Linux;
/// the tolerance only allows for a different libm's `exp`/`ln`).
const TOL: f64 = 1e-9;

#[rustfmt::skip]
const EXPECTED: &[Expected] = &[
    Expected { name: "bleu_short_1ref", score: 41.86169065902824, signature: "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 268, ref_len: 355, counts: &[245, 153, 95, 56], totals: &[268, 229, 190, 152] } },
    Expected { name: "bleu_short_2ref", score: 51.05563894522971, signature: "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 268, ref_len: 338, counts: &[253, 167, 111, 73], totals: &[268, 229, 190, 152] } },
    Expected { name: "bleu_long_1ref", score: 53.031943587534016, signature: "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 461, ref_len: 355, counts: &[350, 250, 180, 127], totals: &[461, 421, 381, 342] } },
    Expected { name: "bleu_long_2ref", score: 54.45062929389979, signature: "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 461, ref_len: 360, counts: &[355, 257, 186, 131], totals: &[461, 421, 381, 342] } },
    Expected { name: "bleu_long_1ref_lc", score: 53.12277339266798, signature: "nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 461, ref_len: 355, counts: &[351, 251, 180, 127], totals: &[461, 421, 381, 342] } },
    Expected { name: "bleu_short_2ref_intl", score: 52.36649206327206, signature: "nrefs:2|case:mixed|eff:no|tok:intl|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 287, ref_len: 365, counts: &[272, 188, 129, 86], totals: &[287, 248, 209, 171] } },
    Expected { name: "bleu_long_1ref_none", score: 44.97665272822222, signature: "nrefs:1|case:mixed|eff:no|tok:none|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 401, ref_len: 304, counts: &[276, 191, 128, 80], totals: &[401, 361, 322, 283] } },
    Expected { name: "bleu_short_1ref_char", score: 57.00772153645973, signature: "nrefs:1|case:mixed|eff:no|tok:char|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 929, ref_len: 1327, counts: &[903, 801, 720, 643], totals: &[929, 890, 851, 812] } },
    Expected { name: "bleu_reversed_1ref", score: 3.0183643902022577, signature: "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 268, ref_len: 355, counts: &[245, 22, 2, 0], totals: &[268, 229, 190, 152] } },
    Expected { name: "bleu_reversed_1ref_floor", score: 2.0185019228338303, signature: "nrefs:1|case:mixed|eff:no|tok:13a|smooth:floor[0.10]|version:2.6.0", detail: Detail::Bleu { sys_len: 268, ref_len: 355, counts: &[245, 22, 2, 0], totals: &[268, 229, 190, 152] } },
    Expected { name: "bleu_reversed_1ref_floor05", score: 3.0183643902022577, signature: "nrefs:1|case:mixed|eff:no|tok:13a|smooth:floor[0.50]|version:2.6.0", detail: Detail::Bleu { sys_len: 268, ref_len: 355, counts: &[245, 22, 2, 0], totals: &[268, 229, 190, 152] } },
    Expected { name: "bleu_reversed_1ref_addk", score: 4.000582955530622, signature: "nrefs:1|case:mixed|eff:no|tok:13a|smooth:add-k[1.00]|version:2.6.0", detail: Detail::Bleu { sys_len: 268, ref_len: 355, counts: &[245, 22, 2, 0], totals: &[268, 229, 190, 152] } },
    Expected { name: "bleu_reversed_1ref_nosmooth", score: 0.0, signature: "nrefs:1|case:mixed|eff:no|tok:13a|smooth:none|version:2.6.0", detail: Detail::Bleu { sys_len: 268, ref_len: 355, counts: &[245, 22, 2, 0], totals: &[268, 229, 190, 152] } },
    Expected { name: "bleu_tiny", score: 0.0, signature: "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 5, ref_len: 12, counts: &[5, 1, 0, 0], totals: &[5, 2, 0, 0] } },
    Expected { name: "bleu_tiny_eff", score: 17.437038542312457, signature: "nrefs:1|case:mixed|eff:yes|tok:13a|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 5, ref_len: 12, counts: &[5, 1, 0, 0], totals: &[5, 2, 0, 0] } },
    Expected { name: "bleu_long_2ref_order2", score: 68.56290772858073, signature: "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0", detail: Detail::Bleu { sys_len: 461, ref_len: 360, counts: &[355, 257], totals: &[461, 421] } },
    Expected { name: "chrf_short_1ref", score: 59.618876915055985, signature: "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0", detail: Detail::Chrf { stats: &[[929, 1327, 903], [890, 1287, 801], [851, 1247, 720], [812, 1207, 643], [773, 1167, 571], [735, 1128, 502]] } },
    Expected { name: "chrf_short_2ref", score: 64.51300090664152, signature: "nrefs:2|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0", detail: Detail::Chrf { stats: &[[929, 1282, 909], [890, 1242, 817], [851, 1202, 745], [812, 1162, 680], [773, 1122, 619], [735, 1083, 561]] } },
    Expected { name: "chrf_long_1ref", score: 82.28565100522079, signature: "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0", detail: Detail::Chrf { stats: &[[1800, 1327, 1308], [1760, 1287, 1213], [1720, 1247, 1128], [1680, 1207, 1046], [1640, 1167, 967], [1601, 1128, 890]] } },
    Expected { name: "chrf_long_2ref", score: 83.90834288388479, signature: "nrefs:2|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0", detail: Detail::Chrf { stats: &[[1800, 1319, 1314], [1760, 1279, 1228], [1720, 1239, 1145], [1680, 1199, 1064], [1640, 1159, 986], [1601, 1120, 910]] } },
    Expected { name: "chrfpp_short_1ref", score: 60.06422865663983, signature: "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0", detail: Detail::Chrf { stats: &[[929, 1327, 903], [890, 1287, 801], [851, 1247, 720], [812, 1207, 643], [773, 1167, 571], [735, 1128, 502], [263, 345, 237], [224, 305, 146]] } },
    Expected { name: "chrfpp_long_2ref", score: 83.7210136922978, signature: "nrefs:2|case:mixed|eff:yes|nc:6|nw:2|space:no|version:2.6.0", detail: Detail::Chrf { stats: &[[1800, 1319, 1314], [1760, 1279, 1228], [1720, 1239, 1145], [1680, 1199, 1064], [1640, 1159, 986], [1601, 1120, 910], [452, 346, 340], [412, 306, 241]] } },
    Expected { name: "chrf_short_1ref_eps", score: 59.614542192223496, signature: "nrefs:1|case:mixed|eff:no|nc:6|nw:0|space:no|version:2.6.0", detail: Detail::Chrf { stats: &[[929, 1327, 903], [890, 1287, 801], [851, 1247, 720], [812, 1207, 643], [773, 1167, 571], [735, 1128, 502]] } },
    Expected { name: "chrf_long_1ref_lc_space", score: 85.5475347923261, signature: "nrefs:1|case:lc|eff:yes|nc:6|nw:0|space:yes|version:2.6.0", detail: Detail::Chrf { stats: &[[2161, 1591, 1574], [2121, 1551, 1501], [2081, 1511, 1418], [2041, 1471, 1336], [2001, 1431, 1255], [1962, 1392, 1175]] } },
    Expected { name: "chrf_short_2ref_beta1_nc4", score: 75.21970815491332, signature: "nrefs:2|case:mixed|eff:yes|nc:4|nw:0|space:no|version:2.6.0", detail: Detail::Chrf { stats: &[[929, 1293, 913], [890, 1253, 824], [851, 1213, 752], [812, 1173, 684]] } },
    Expected { name: "chrf_reversed_1ref", score: 39.38204606447559, signature: "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0", detail: Detail::Chrf { stats: &[[929, 1327, 903], [890, 1287, 670], [851, 1247, 483], [812, 1207, 345], [773, 1167, 235], [735, 1128, 156]] } },
    Expected { name: "chrf_tiny", score: 55.6030253116535, signature: "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0", detail: Detail::Chrf { stats: &[[24, 39, 24], [21, 36, 20], [18, 33, 17], [15, 30, 14], [12, 27, 12], [10, 24, 10]] } },
    Expected { name: "chrfpp_tiny_eps", score: 49.16109539619968, signature: "nrefs:1|case:mixed|eff:no|nc:6|nw:2|space:no|version:2.6.0", detail: Detail::Chrf { stats: &[[24, 39, 24], [21, 36, 20], [18, 33, 17], [15, 30, 14], [12, 27, 12], [10, 24, 10], [5, 12, 5], [2, 9, 1]] } },
];

#[test]
fn every_case_matches_recorded_sacrebleu() {
    let cases = cases();
    assert_eq!(
        cases.len(),
        EXPECTED.len(),
        "cases.json and EXPECTED differ in length"
    );
    let mut bit_exact = 0;
    for (case, exp) in cases.iter().zip(EXPECTED) {
        assert_eq!(
            case.name, exp.name,
            "cases.json and EXPECTED are in different orders"
        );
        let got = compute(case);
        assert!(
            (got.score() - exp.score).abs() <= TOL,
            "{}: score {} != sacreBLEU {}",
            exp.name,
            got.score(),
            exp.score
        );
        if got.score().to_bits() == exp.score.to_bits() {
            bit_exact += 1;
        }
        assert_eq!(got.signature(), exp.signature, "{}", exp.name);
        match (&got, &exp.detail) {
            (
                Computed::Bleu(s),
                Detail::Bleu {
                    sys_len,
                    ref_len,
                    counts,
                    totals,
                },
            ) => {
                assert_eq!(s.sys_len, *sys_len, "{}: sys_len", exp.name);
                assert_eq!(s.ref_len, *ref_len, "{}: ref_len", exp.name);
                assert_eq!(s.counts, *counts, "{}: counts", exp.name);
                assert_eq!(s.totals, *totals, "{}: totals", exp.name);
            }
            (Computed::Chrf(s), Detail::Chrf { stats }) => {
                let got: Vec<[u64; 3]> = s
                    .stats
                    .orders
                    .iter()
                    .map(|o| [o.hyp, o.reference, o.matched])
                    .collect();
                assert_eq!(got, *stats, "{}: statistics", exp.name);
            }
            _ => panic!("{}: metric kind differs", exp.name),
        }
    }
    eprintln!(
        "{bit_exact} of {} scores are bit-identical to sacreBLEU's",
        EXPECTED.len()
    );
}

/// Lines printed by the sacreBLEU 2.6.0 command line, from `crates/s2s-metrics/tests/data`:
///
/// ```text
/// sacrebleu ref.fr -i hyp_short.fr -m bleu chrf -f text -w 6
/// sacrebleu ref.fr ref2.fr -i hyp_short.fr -m bleu chrf -f text -w 6
/// sacrebleu ref.fr -i hyp_long.fr -m bleu chrf -f text -w 6
/// sacrebleu ref.fr ref2.fr -i hyp_long.fr -m bleu chrf -f text -w 6
/// ```
///
/// (leading alignment spaces removed).
#[test]
fn command_line_output_matches_recorded_sacrebleu() {
    let recorded = [
        ("bleu_short_1ref", "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = 41.861691 91.4/66.8/50.0/36.8 (BP = 0.723 ratio = 0.755 hyp_len = 268 ref_len = 355)"),
        ("chrf_short_1ref", "chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0 = 59.618877"),
        ("bleu_short_2ref", "BLEU|nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = 51.055639 94.4/72.9/58.4/48.0 (BP = 0.770 ratio = 0.793 hyp_len = 268 ref_len = 338)"),
        ("chrf_short_2ref", "chrF2|nrefs:2|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0 = 64.513001"),
        ("bleu_long_1ref", "BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = 53.031944 75.9/59.4/47.2/37.1 (BP = 1.000 ratio = 1.299 hyp_len = 461 ref_len = 355)"),
        ("chrf_long_1ref", "chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0 = 82.285651"),
        ("bleu_long_2ref", "BLEU|nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = 54.450629 77.0/61.0/48.8/38.3 (BP = 1.000 ratio = 1.281 hyp_len = 461 ref_len = 360)"),
        ("chrf_long_2ref", "chrF2|nrefs:2|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0 = 83.908343"),
    ];
    let cases = cases();
    for (name, line) in recorded {
        let case = cases.iter().find(|c| c.name == name).unwrap();
        assert_eq!(compute(case).with_signature(6), line);
    }
    // The plain `Display` is sacreBLEU's `Score.format()`.
    let bleu = compute(cases.iter().find(|c| c.name == "bleu_short_1ref").unwrap());
    assert_eq!(
        bleu.display(),
        "BLEU = 41.86 91.4/66.8/50.0/36.8 (BP = 0.723 ratio = 0.755 hyp_len = 268 ref_len = 355)"
    );
    let chrf = compute(cases.iter().find(|c| c.name == "chrf_short_1ref").unwrap());
    assert_eq!(chrf.display(), "chrF2 = 59.62");
}
