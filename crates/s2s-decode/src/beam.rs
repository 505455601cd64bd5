//! Batched beam search, with n-best lists, length penalties and diverse groups.

use crate::driver::{drive, Reorder, SearchState};
use crate::search::{attention_row, LengthPenalty, LogitsProcessors, Logprobs};
use crate::{greedy::argmax, Hypothesis, SpecialTokens, StepDecoder, Strategy};
use burn::tensor::backend::Backend;
use s2s_data::InferenceBatch;
use std::cmp::Ordering;

/// Beam search over all sentences and beams of a batch at once: every live hypothesis of
/// every sentence is one row of a single model step; finished sentences leave the batch.
///
/// With `groups > 1` it is diverse beam search (Vijayakumar et al., 2018): the beams are
/// split into groups that advance one after the other at each step, and a token already
/// chosen by an earlier group at this step costs `diversity` per use (Hamming diversity).
#[derive(Debug, Clone, PartialEq)]
pub struct BeamSearch {
    /// Beams per sentence (a multiple of `groups`).
    pub beam_size: usize,
    /// Hypotheses returned per sentence (at most `beam_size`).
    pub n_best: usize,
    /// Normalisation of scores by length, for ranking and early stopping.
    pub length_penalty: LengthPenalty,
    /// Minimum output length before `<eos>` is allowed.
    pub min_len: usize,
    /// Maximum output length (`<eos>` excluded).
    pub max_len: usize,
    /// Also cap the output length at `ceil(ratio * source length)`.
    pub max_len_ratio: Option<f32>,
    /// Beam groups for diverse beam search (1: plain beam search).
    pub groups: usize,
    /// Diversity penalty per earlier-group use of a token at the same step.
    pub diversity: f32,
    /// Adjustments to the log-probabilities before choosing.
    pub processors: LogitsProcessors,
    /// Also return each step's attention weights.
    pub keep_attention: bool,
}

impl BeamSearch {
    /// Beam search with `beam_size` beams, 1-best output, no length penalty.
    pub fn new(beam_size: usize, max_len: usize) -> Self {
        BeamSearch {
            beam_size: beam_size.max(1),
            n_best: 1,
            length_penalty: LengthPenalty::None,
            min_len: 0,
            max_len,
            max_len_ratio: None,
            groups: 1,
            diversity: 0.0,
            processors: LogitsProcessors::default(),
            keep_attention: false,
        }
    }

    fn beams_per_group(&self) -> usize {
        (self.beam_size / self.groups.max(1)).max(1)
    }

    fn sentence_max_len(&self, src_len: usize) -> usize {
        let cap = self
            .max_len_ratio
            .map(|r| (r * src_len as f32).ceil() as usize)
            .unwrap_or(usize::MAX);
        self.max_len.min(cap).max(self.min_len)
    }
}

/// Rows of finished sentences are left in the batch, and computed for nothing, while they
/// are at most one in this many rows: dropping them means copying the memory (encoder
/// outputs, attention keys and the decoding cache's values) of every remaining sentence.
/// (Dropping them at once, now that a sentence's beams share one copy of its memory, gave
/// 0.98-1.15x in paired runs: within the noise.)
const DEAD_ROWS_KEPT: usize = 4;

#[derive(Clone)]
struct Beam {
    tokens: Vec<u32>,
    score: f32,
    group: usize,
    attention: Option<Vec<Vec<f32>>>,
}

impl Beam {
    /// The beam's attention rows with this step's row of `row` appended (`None` when
    /// attention is not kept).
    fn attention_with(
        &self,
        step: &StepView<'_>,
        row: usize,
        true_len: usize,
    ) -> Option<Vec<Vec<f32>>> {
        self.attention.as_ref().map(|a| {
            let mut a = a.clone();
            if let Some(w) = step.attention {
                a.push(attention_row(w, row, step.src_len, true_len));
            }
            a
        })
    }
}

struct Sentence {
    row: usize,
    max_len: usize,
    beams: Vec<Beam>,
    finished: Vec<Hypothesis>,
}

struct Candidate {
    adjusted: f32,
    score: f32,
    beam: usize,
    token: usize,
}

fn by_score_desc(a: &Hypothesis, b: &Hypothesis) -> Ordering {
    b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal)
}

impl Sentence {
    /// True when no open beam can still beat the `n_best`-th finished hypothesis.
    fn is_done(&self, n_best: usize, penalty: LengthPenalty) -> bool {
        if self.beams.is_empty() {
            return true;
        }
        if self.finished.len() < n_best {
            return false;
        }
        let mut scores: Vec<f32> = self.finished.iter().map(|h| h.score).collect();
        scores.sort_by(|a, b| b.partial_cmp(a).unwrap_or(Ordering::Equal));
        let worst_kept = scores[n_best - 1];
        // Log-probability sums only decrease; with a penalty the best an open beam can reach
        // is its current (negative) sum divided by the largest divisor, at `max_len + 1`.
        let divisor = penalty.divisor(self.max_len + 1).max(1.0);
        let best_open = self
            .beams
            .iter()
            .map(|b| {
                if b.score < 0.0 {
                    b.score / divisor
                } else {
                    b.score
                }
            })
            .fold(f32::NEG_INFINITY, f32::max);
        best_open <= worst_kept
    }
}

/// One step's log-probabilities (after the processors) and attention, as the beams read
/// them.
struct StepView<'a> {
    /// `[rows * vocab]`
    logp: &'a [f32],
    vocab: usize,
    /// `[rows * src_len]`, when attention is kept.
    attention: Option<&'a [f32]>,
    src_len: usize,
}

impl StepView<'_> {
    fn row(&self, row: usize) -> &[f32] {
        &self.logp[row * self.vocab..(row + 1) * self.vocab]
    }
}

/// The search's state between model steps (OpenNMT-py's `BeamSearch`, fairseq's
/// `search.py`): the beams and finished hypotheses of every sentence and which sentence
/// each model row belongs to. The driver loop ([`drive`]) runs the model; as a
/// [`SearchState`], a step's log-probabilities are processed ([`process`](Self::process)),
/// the next beams chosen ([`choose`](Self::choose)), the model's rows made to follow them
/// ([`compact`](Self::compact)), and the n-best lists returned at the end.
struct BeamState<'a> {
    search: &'a BeamSearch,
    special: SpecialTokens,
    source_lengths: &'a [usize],
    /// The batch's padded source length.
    src_len: usize,
    groups: usize,
    per_group: usize,
    n_best: usize,
    sentences: Vec<Sentence>,
    /// Sentences with open beams.
    active: Vec<usize>,
    /// The sentence of each model row. Beams of one sentence are consecutive rows and share
    /// its memory; while this does not change, a step reorders the state only.
    rows: Vec<usize>,
}

impl<'a> BeamState<'a> {
    /// Every sentence with one empty beam per group, in the rows `[s; groups]`.
    fn new(
        search: &'a BeamSearch,
        source_lengths: &'a [usize],
        src_len: usize,
        special: SpecialTokens,
    ) -> Self {
        let groups = search.groups.max(1);
        let per_group = search.beams_per_group();
        let sentences = (0..source_lengths.len())
            .map(|i| Sentence {
                row: i,
                max_len: search.sentence_max_len(source_lengths[i]),
                beams: (0..groups)
                    .map(|g| Beam {
                        tokens: Vec::new(),
                        score: 0.0,
                        group: g,
                        attention: search.keep_attention.then(Vec::new),
                    })
                    .collect(),
                finished: Vec::new(),
            })
            .collect();
        BeamState {
            search,
            special,
            source_lengths,
            src_len,
            groups,
            per_group,
            n_best: search.n_best.clamp(1, per_group * groups),
            sentences,
            active: (0..source_lengths.len()).collect(),
            rows: (0..source_lengths.len())
                .flat_map(|i| std::iter::repeat_n(i, groups))
                .collect(),
        }
    }

    /// The first row of each sentence's block (`usize::MAX` for a sentence without rows).
    fn block_starts(&self) -> Vec<usize> {
        let mut start = vec![usize::MAX; self.sentences.len()];
        for (row, &s) in self.rows.iter().enumerate().rev() {
            start[s] = row;
        }
        start
    }

    /// Each row's input token: its beam's last token, `<sos>` at the first step. Rows of
    /// sentences that have finished (left in place) get `<eos>`; their results are not read.
    fn tokens(&self, step: usize, starts: &[usize]) -> Vec<usize> {
        self.rows
            .iter()
            .enumerate()
            .map(|(row, &s)| {
                self.sentences[s]
                    .beams
                    .get(row - starts[s])
                    .and_then(|b| b.tokens.last())
                    .map_or(
                        if step == 0 {
                            self.special.sos
                        } else {
                            self.special.eos
                        },
                        |&t| t as usize,
                    )
            })
            .collect()
    }

    /// Applies the logits processors and the minimum length to the open beams' rows.
    fn process(&self, step: usize, logp: &mut [f32], vocab: usize, starts: &[usize]) {
        for &s in &self.active {
            for (b, beam) in self.sentences[s].beams.iter().enumerate() {
                let row = starts[s] + b;
                let logp = &mut logp[row * vocab..(row + 1) * vocab];
                self.search
                    .processors
                    .apply_for(&beam.tokens, logp, &self.special);
                LogitsProcessors::apply_min_len(step, self.search.min_len, self.special.eos, logp);
            }
        }
    }

    /// Chooses every open sentence's next beams from the step's log-probabilities; returns,
    /// per sentence, the row each new beam extends (empty for a sentence that finished).
    fn choose(&mut self, step: usize, view: &StepView<'_>, starts: &[usize]) -> Vec<Vec<usize>> {
        let mut parents: Vec<Vec<usize>> = vec![Vec::new(); self.sentences.len()];
        let mut still_active = Vec::with_capacity(self.active.len());
        for s in std::mem::take(&mut self.active) {
            if step == self.sentences[s].max_len {
                self.end_beams(s, view, starts[s]);
                continue;
            }
            let new_parents = self.expand(s, view, starts[s]);
            let sentence = &mut self.sentences[s];
            if sentence.is_done(self.n_best, self.search.length_penalty) {
                sentence.beams.clear();
            } else {
                parents[s] = new_parents;
                still_active.push(s);
            }
        }
        self.active = still_active;
        parents
    }

    /// The last step of sentence `s`: each beam ends, with `<eos>` if that is its best token.
    fn end_beams(&mut self, s: usize, view: &StepView<'_>, start: usize) {
        let penalty = self.search.length_penalty;
        let sentence = &mut self.sentences[s];
        for (b, beam) in sentence.beams.iter().enumerate() {
            let (id, best) = argmax(view.row(start + b));
            let (score, len) = if id == self.special.eos {
                (beam.score + best, beam.tokens.len() + 1)
            } else {
                (beam.score, beam.tokens.len().max(1))
            };
            sentence.finished.push(Hypothesis {
                tokens: beam.tokens.clone(),
                score: penalty.apply(score, len),
                attention: beam.attention.clone(),
            });
        }
        sentence.beams.clear();
    }

    /// The best `per_group` extensions of each group of sentence `s`'s beams, groups in order
    /// (a token chosen by an earlier group costs `diversity` per use); an `<eos>` among a
    /// group's best finishes a hypothesis. Returns the row each new beam extends.
    fn expand(&mut self, s: usize, view: &StepView<'_>, start: usize) -> Vec<usize> {
        let search = self.search;
        let per_group = self.per_group;
        let true_len = self.source_lengths[self.sentences[s].row];
        let sentence = &mut self.sentences[s];
        let mut used = vec![0usize; view.vocab];
        let mut new_beams: Vec<Beam> = Vec::with_capacity(per_group * self.groups);
        let mut new_parents: Vec<usize> = Vec::new();
        for g in 0..self.groups {
            let candidates = group_candidates(
                &sentence.beams,
                g,
                view,
                start,
                &used,
                search.diversity,
                per_group,
            );
            let mut added = 0;
            let mut chosen = Vec::new();
            for (rank, c) in candidates.iter().enumerate() {
                let parent = &sentence.beams[c.beam];
                let row = start + c.beam;
                if c.token == self.special.eos {
                    // An `<eos>` outside the group's best `per_group` is not taken. A taken
                    // `<eos>` counts as used, so later groups pay the diversity penalty for
                    // ending here too.
                    if rank < per_group {
                        chosen.push(c.token);
                        sentence.finished.push(Hypothesis {
                            tokens: parent.tokens.clone(),
                            score: search
                                .length_penalty
                                .apply(c.score, parent.tokens.len() + 1),
                            attention: parent.attention_with(view, row, true_len),
                        });
                    }
                    continue;
                }
                let mut tokens = parent.tokens.clone();
                tokens.push(c.token as u32);
                new_beams.push(Beam {
                    tokens,
                    score: c.score,
                    group: g,
                    attention: parent.attention_with(view, row, true_len),
                });
                new_parents.push(row);
                chosen.push(c.token);
                added += 1;
                if added == per_group {
                    break;
                }
            }
            for t in chosen {
                used[t] += 1;
            }
        }
        sentence.beams = new_beams;
        new_parents
    }

    /// How the model's rows follow the new beams (`None` when every sentence finished),
    /// and the new row layout.
    fn compact(&mut self, parents: &[Vec<usize>], starts: &[usize]) -> Option<Reorder> {
        if self.active.is_empty() {
            return None;
        }
        let live: usize = self
            .active
            .iter()
            .map(|&s| self.sentences[s].beams.len())
            .sum();
        let same_blocks = self.active.iter().all(|&s| {
            let len = self.sentences[s].beams.len();
            self.rows.get(starts[s] + len - 1) == Some(&s)
                && self.rows.get(starts[s] + len) != Some(&s)
        });
        if same_blocks && self.rows.len() - live <= self.rows.len() / DEAD_ROWS_KEPT {
            let rows = self
                .rows
                .iter()
                .enumerate()
                .map(|(row, &s)| parents[s].get(row - starts[s]).copied().unwrap_or(row))
                .collect();
            return Some(Reorder::State(rows));
        }
        let rows = self
            .active
            .iter()
            .flat_map(|&s| parents[s].iter().copied())
            .collect();
        self.rows = self
            .active
            .iter()
            .flat_map(|&s| std::iter::repeat_n(s, self.sentences[s].beams.len()))
            .collect();
        Some(Reorder::All(rows))
    }
}

impl SearchState for BeamState<'_> {
    /// Every sentence's groups start from `<sos>` in rows of their own.
    fn initial_rows(&self) -> Option<Vec<usize>> {
        (self.groups > 1).then(|| self.rows.clone())
    }

    fn is_finished(&self) -> bool {
        self.active.is_empty()
    }

    fn input_tokens(&self, step: usize) -> Vec<usize> {
        self.tokens(step, &self.block_starts())
    }

    fn advance(&mut self, step: usize, out: Logprobs) -> Reorder {
        let starts = self.block_starts();
        let Logprobs {
            mut logp,
            vocab,
            attention,
        } = out;
        self.process(step, &mut logp, vocab, &starts);
        let view = StepView {
            logp: &logp,
            vocab,
            attention: attention.as_deref(),
            src_len: self.src_len,
        };
        let parents = self.choose(step, &view, &starts);
        self.compact(&parents, &starts).unwrap_or(Reorder::Keep)
    }

    /// Each sentence's `n_best` hypotheses, best first.
    fn finalize(self) -> Vec<Vec<Hypothesis>> {
        let n_best = self.n_best;
        self.sentences
            .into_iter()
            .map(|mut s| {
                s.finished.sort_by(by_score_desc);
                s.finished.truncate(n_best);
                s.finished
            })
            .collect()
    }
}

/// The best `2 * per_group` extensions of the beams of group `g` (rows from `start`), by
/// score less the diversity penalty, best first (ties: lower beam, then lower token).
fn group_candidates(
    beams: &[Beam],
    g: usize,
    view: &StepView<'_>,
    start: usize,
    used: &[usize],
    diversity: f32,
    per_group: usize,
) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = Vec::new();
    for (b, beam) in beams.iter().enumerate() {
        if beam.group != g {
            continue;
        }
        for (token, &lp) in view.row(start + b).iter().enumerate() {
            if lp == f32::NEG_INFINITY {
                continue;
            }
            let score = beam.score + lp;
            let adjusted = score - diversity * used[token] as f32;
            candidates.push(Candidate {
                adjusted,
                score,
                beam: b,
                token,
            });
        }
    }
    let cmp = |a: &Candidate, b: &Candidate| {
        b.adjusted
            .partial_cmp(&a.adjusted)
            .unwrap_or(Ordering::Equal)
            .then(a.beam.cmp(&b.beam))
            .then(a.token.cmp(&b.token))
    };
    let keep = (2 * per_group).min(candidates.len());
    if keep < candidates.len() && keep > 0 {
        candidates.select_nth_unstable_by(keep - 1, cmp);
        candidates.truncate(keep);
    }
    candidates.sort_by(cmp);
    candidates
}

impl<B: Backend, M: StepDecoder<B>> Strategy<B, M> for BeamSearch {
    /// The driver loop over a [`BeamState`]: one model step for every open beam of every
    /// sentence, then the state chooses and the model's rows follow.
    fn decode(&self, model: &M, batch: &InferenceBatch<B>) -> Vec<Vec<Hypothesis>> {
        let beams = BeamState::new(
            self,
            &batch.source_lengths,
            batch.source.dims()[1],
            model.special_tokens(),
        );
        drive(model, batch, self.keep_attention, beams)
    }
}

#[cfg(test)]
mod tests {
    //! Beam search on a decoder whose next-token distribution is a table indexed by the
    //! prefix, so that every result can be worked out by hand. The decoder's state is the
    //! prefix itself: a back-pointer that hands a beam another beam's state makes the table
    //! answer for the wrong prefix, and the scores come out wrong.
    use super::*;
    use crate::{decode_all, Greedy};
    use burn::tensor::{Int, Tensor, TensorData};
    use s2s_data::BatchSize;
    use s2s_tensor::backend::DefaultBackend as B;

    const A: u32 = 4;
    const BEE: u32 = 5;
    const VOCAB: usize = 6;

    /// `(eos, a, b)` after `prefix`: `[] -> a .55, b .45; [a] -> eos .25, a .40, b .35;`
    /// `[b] -> eos .05, a .90, b .05; [a a] -> eos .50, a .30, b .20`; anything else:
    /// `eos .90, a .05, b .05`. Specials other than `<eos>` get 1e-6 (and `<eos>` at least
    /// that).
    fn probs(prefix: &[u32]) -> [f64; 3] {
        match prefix {
            [] => [0.0, 0.55, 0.45],
            [A] => [0.25, 0.40, 0.35],
            [BEE] => [0.05, 0.90, 0.05],
            [A, A] => [0.50, 0.30, 0.20],
            _ => [0.90, 0.05, 0.05],
        }
    }

    struct Table;

    impl StepDecoder<B> for Table {
        type Memory = Vec<usize>;
        type State = Vec<Vec<u32>>;

        fn start(
            &self,
            source: Tensor<B, 2, Int>,
            _lengths: &[usize],
        ) -> (Vec<usize>, Vec<Vec<u32>>) {
            let rows = source.dims()[0];
            ((0..rows).collect(), vec![Vec::new(); rows])
        }

        fn step(
            &self,
            memory: &Vec<usize>,
            tokens: Tensor<B, 1, Int>,
            state: Vec<Vec<u32>>,
        ) -> (Tensor<B, 2>, Vec<Vec<u32>>, Tensor<B, 2>) {
            let device = tokens.device();
            let tokens: Vec<i64> = tokens.into_data().convert::<i64>().to_vec().unwrap();
            let state: Vec<Vec<u32>> = state
                .into_iter()
                .zip(&tokens)
                .map(|(mut prefix, &t)| {
                    if t != s2s_data::Vocab::SOS as i64 {
                        prefix.push(t as u32);
                    }
                    prefix
                })
                .collect();
            let mut logits = Vec::with_capacity(state.len() * VOCAB);
            for prefix in &state {
                let [eos, a, b] = probs(prefix);
                let p = [1e-6, 1e-6, eos.max(1e-6), 1e-6, a, b];
                logits.extend(p.iter().map(|&p| p.ln() as f32));
            }
            let rows = state.len();
            let logits = Tensor::from_data(TensorData::new(logits, [rows, VOCAB]), &device);
            let attention = Tensor::ones([rows, 1], &device);
            assert_eq!(memory.len(), rows);
            (logits, state, attention)
        }

        fn select_rows(
            &self,
            memory: &Vec<usize>,
            state: Vec<Vec<u32>>,
            indices: &[usize],
        ) -> (Vec<usize>, Vec<Vec<u32>>) {
            let memory = indices.iter().map(|&i| memory[i]).collect();
            (memory, self.select_state_rows(state, indices))
        }

        fn select_state_rows(&self, state: Vec<Vec<u32>>, indices: &[usize]) -> Vec<Vec<u32>> {
            indices.iter().map(|&i| state[i].clone()).collect()
        }
    }

    /// The hypotheses of one source: tokens and scores.
    fn run(strategy: &impl Strategy<B, Table>) -> Vec<(Vec<u32>, f64)> {
        let out = decode_all(
            &Table,
            strategy,
            &[vec![7]],
            BatchSize::Sentences(1),
            &Default::default(),
        );
        out[0]
            .iter()
            .map(|h| (h.tokens.clone(), h.score as f64))
            .collect()
    }

    /// The log-probability that the table gives `tokens`, followed by `<eos>` when `ends`,
    /// normalised over the vocabulary with its 1e-6 entries (as the log-softmax does).
    fn log_prob(tokens: &[u32], ends: bool) -> f64 {
        let mut p = 1.0;
        for i in 0..=tokens.len() {
            let [eos, a, b] = probs(&tokens[..i]);
            let total = eos.max(1e-6) + a + b + 3e-6;
            p *= match tokens.get(i) {
                None if ends => eos,
                None => total,
                Some(&A) => a,
                Some(_) => b,
            } / total;
        }
        p.ln()
    }

    fn ended(tokens: &[u32]) -> f64 {
        log_prob(tokens, true)
    }

    fn assert_hypotheses(got: &[(Vec<u32>, f64)], want: &[(Vec<u32>, f64)]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for ((gt, gs), (wt, ws)) in got.iter().zip(want) {
            assert_eq!(gt, wt, "{got:?} vs {want:?}");
            assert!((gs - ws).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    /// Greedy takes `a` (.55) and ends at `a a` (.55 * .40 * .50 = .11). Two beams keep `a`
    /// and `b`, then `b a` (.405, from the second beam) and `a a` (.22, from the first), and
    /// find `b a` (.405 * .9 = .3645) and `a a` (.11). Had `b a` been given `a`'s state, the
    /// table would have answered for `a a` and scored it .405 * .5.
    #[test]
    fn two_beams_find_what_greedy_misses() {
        assert_eq!(run(&Greedy::new(5))[0].0, vec![A, A]);
        let mut beam = BeamSearch::new(2, 5);
        beam.n_best = 2;
        assert_hypotheses(
            &run(&beam),
            &[
                (vec![BEE, A], ended(&[BEE, A])),
                (vec![A, A], ended(&[A, A])),
            ],
        );
        assert!((ended(&[BEE, A]) - (0.45f64 * 0.9 * 0.9).ln()).abs() < 1e-4);
    }

    /// `avg:1.0` divides each score by its length with `<eos>`, which favours long outputs:
    /// `a a a` (ln .0594 / 4 = -0.706) now beats `a a` (ln .11 / 3 = -0.736), so the search
    /// may not stop once two hypotheses have ended.
    #[test]
    fn a_length_penalty_divides_the_scores() {
        let mut beam = BeamSearch::new(2, 5);
        beam.n_best = 2;
        beam.length_penalty = LengthPenalty::Average(1.0);
        assert_hypotheses(
            &run(&beam),
            &[
                (vec![BEE, A], ended(&[BEE, A]) / 3.0),
                (vec![A, A, A], ended(&[A, A, A]) / 4.0),
            ],
        );
    }

    /// With `min_len` 3 nothing ends before three tokens: `b a` and `a a` may not end; the
    /// beams after three steps are `a a a` (.066) and `a a b` (.044), which then end (.9).
    #[test]
    fn min_len_forbids_an_early_end() {
        let mut beam = BeamSearch::new(2, 5);
        beam.n_best = 2;
        beam.min_len = 3;
        assert_hypotheses(
            &run(&beam),
            &[
                (vec![A, A, A], ended(&[A, A, A])),
                (vec![A, A, BEE], ended(&[A, A, BEE])),
            ],
        );
    }

    /// At `max_len` 1 the search stops after one token. Neither `a` nor `b` has `<eos>` as
    /// its best next token, so both are cut off and scored without it (.55 and .45).
    #[test]
    fn max_len_cuts_hypotheses_off() {
        let mut beam = BeamSearch::new(2, 1);
        beam.n_best = 2;
        assert_hypotheses(
            &run(&beam),
            &[
                (vec![A], log_prob(&[A], false)),
                (vec![BEE], log_prob(&[BEE], false)),
            ],
        );
        // At max_len 2, `b a` and `a a` both end with `<eos>`, their best token.
        let mut beam = BeamSearch::new(2, 2);
        beam.n_best = 2;
        assert_hypotheses(
            &run(&beam),
            &[
                (vec![BEE, A], ended(&[BEE, A])),
                (vec![A, A], ended(&[A, A])),
            ],
        );
    }

    fn hyp(score: f32) -> Hypothesis {
        Hypothesis {
            tokens: Vec::new(),
            score,
            attention: None,
        }
    }

    fn beam(score: f32) -> Beam {
        Beam {
            tokens: vec![A],
            score,
            group: 0,
            attention: None,
        }
    }

    /// A sentence is done when its `n_best`-th finished score is at least the best an open
    /// beam can still reach: its score without a penalty (sums only fall), its score divided
    /// by the largest divisor (at `max_len + 1`) with one.
    #[test]
    fn a_sentence_is_done_when_no_open_beam_can_win() {
        let sentence = |open: f32| Sentence {
            row: 0,
            max_len: 5,
            beams: vec![beam(-9.0), beam(open)],
            finished: vec![hyp(-2.0), hyp(-1.0), hyp(-4.0)],
        };
        // Two kept: the worst is -2.0.
        assert!(!sentence(-1.9).is_done(2, LengthPenalty::None));
        assert!(sentence(-2.0).is_done(2, LengthPenalty::None));
        assert!(sentence(-2.1).is_done(2, LengthPenalty::None));
        // Fewer finished than n_best: never done while beams are open.
        assert!(!sentence(-9.0).is_done(4, LengthPenalty::None));
        // avg:1.0 with max_len 5: an open -3.0 may still reach -3.0 / 6 = -0.5.
        let mut s = sentence(-3.0);
        s.finished = vec![hyp(-0.6), hyp(-0.4)];
        assert!(!s.is_done(2, LengthPenalty::Average(1.0)));
        s.beams = vec![beam(-3.7)];
        assert!(s.is_done(2, LengthPenalty::Average(1.0)));
        // No open beam: done.
        s.beams.clear();
        assert!(s.is_done(5, LengthPenalty::None));
    }

    /// [`Table`] with its token ids renumbered by `NEW_ID` (`<sos>` 1 -> 0, `<eos>` 2 -> 4,
    /// `a` 4 -> 2, `<pad>` 0 -> 1), reporting its special tokens accordingly: the strategies
    /// must read `<sos>` and `<eos>` from the decoder, not assume `s2s_data::Vocab`'s ids.
    struct Renumbered;

    const NEW_ID: [usize; VOCAB] = [1, 0, 4, 3, 2, 5];

    fn old_id(new: usize) -> usize {
        NEW_ID
            .iter()
            .position(|&n| n == new)
            .expect("a permutation")
    }

    impl StepDecoder<B> for Renumbered {
        type Memory = Vec<usize>;
        type State = Vec<Vec<u32>>;

        fn start(
            &self,
            source: Tensor<B, 2, Int>,
            lengths: &[usize],
        ) -> (Vec<usize>, Vec<Vec<u32>>) {
            Table.start(source, lengths)
        }

        fn step(
            &self,
            memory: &Vec<usize>,
            tokens: Tensor<B, 1, Int>,
            state: Vec<Vec<u32>>,
        ) -> (Tensor<B, 2>, Vec<Vec<u32>>, Tensor<B, 2>) {
            let device = tokens.device();
            let old: Vec<i64> = tokens
                .into_data()
                .convert::<i64>()
                .to_vec::<i64>()
                .unwrap()
                .into_iter()
                .map(|t| old_id(t as usize) as i64)
                .collect();
            let n = old.len();
            let tokens = Tensor::from_data(TensorData::new(old, [n]), &device);
            let (logits, state, attention) = Table.step(memory, tokens, state);
            let old_logits: Vec<f32> = logits.into_data().to_vec().unwrap();
            let mut logits = vec![0.0f32; old_logits.len()];
            for (i, &l) in old_logits.iter().enumerate() {
                logits[i / VOCAB * VOCAB + NEW_ID[i % VOCAB]] = l;
            }
            let logits = Tensor::from_data(TensorData::new(logits, [n, VOCAB]), &device);
            (logits, state, attention)
        }

        fn select_rows(
            &self,
            memory: &Vec<usize>,
            state: Vec<Vec<u32>>,
            indices: &[usize],
        ) -> (Vec<usize>, Vec<Vec<u32>>) {
            Table.select_rows(memory, state, indices)
        }

        fn select_state_rows(&self, state: Vec<Vec<u32>>, indices: &[usize]) -> Vec<Vec<u32>> {
            Table.select_state_rows(state, indices)
        }

        fn special_tokens(&self) -> SpecialTokens {
            let defaults = SpecialTokens::default();
            SpecialTokens {
                sos: NEW_ID[defaults.sos],
                eos: NEW_ID[defaults.eos],
                unk: defaults.unk.map(|u| NEW_ID[u]),
            }
        }
    }

    #[test]
    fn strategies_use_the_decoders_special_tokens() {
        let mut beam = BeamSearch::new(2, 4);
        beam.n_best = 2;
        beam.min_len = 1;
        let greedy = Greedy::new(4);
        let sources = [vec![7u32]];
        let device = Default::default();
        let one = BatchSize::Sentences(1);
        let mut new = decode_all(&Renumbered, &beam, &sources, one, &device);
        let mut old = decode_all(&Table, &beam, &sources, one, &device);
        new.extend(decode_all(&Renumbered, &greedy, &sources, one, &device));
        old.extend(decode_all(&Table, &greedy, &sources, one, &device));
        assert_eq!(new.len(), old.len());
        for (n, o) in new.iter().zip(&old) {
            assert_eq!(n.len(), o.len());
            for (n, o) in n.iter().zip(o) {
                let renumbered: Vec<u32> = o
                    .tokens
                    .iter()
                    .map(|&t| NEW_ID[t as usize] as u32)
                    .collect();
                assert_eq!(n.tokens, renumbered);
                // The log-softmax sums the permuted row in another order.
                assert!(
                    (n.score - o.score).abs() < 1e-5,
                    "{} vs {}",
                    n.score,
                    o.score
                );
            }
        }
        assert!(!old[0][0].tokens.is_empty(), "min_len 1 holds");
    }

    /// A processor of the caller's own: forbids one token.
    #[derive(Debug)]
    struct Forbid(u32);

    impl crate::LogitsProcessor for Forbid {
        fn process(&self, _prefix: &[u32], logp: &mut [f32], _special: &SpecialTokens) {
            logp[self.0 as usize] = f32::NEG_INFINITY;
        }
    }

    #[test]
    fn a_custom_logits_processor_applies_to_every_strategy() {
        let forbid: std::sync::Arc<dyn crate::LogitsProcessor> = std::sync::Arc::new(Forbid(A));
        let mut greedy = Greedy::new(4);
        greedy.processors.custom.push(forbid.clone());
        let mut beam = BeamSearch::new(2, 4);
        beam.n_best = 2;
        beam.processors.custom.push(forbid);
        // Without `a`, the table's best continuation of `[]` is `b`; `[b]` then has `<eos>`
        // and `b` left at .05 each, and the tie goes to the lower id, `<eos>`.
        let best = run(&greedy);
        assert_eq!(best[0].0, vec![BEE]);
        for (tokens, _) in run(&greedy).into_iter().chain(run(&beam)) {
            assert!(!tokens.contains(&A), "{tokens:?} holds the forbidden token");
        }
        assert!(
            run(&Greedy::new(4))[0].0.contains(&A),
            "unconstrained, greedy picks a"
        );
    }
}
