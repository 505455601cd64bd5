//! Batched beam search, with n-best lists, length penalties and diverse groups.

use crate::search::{attention_row, step_logprobs, LengthPenalty, LogitsProcessors};
use crate::{greedy::argmax, Hypothesis, StepDecoder, Strategy};
use burn::tensor::backend::Backend;
use s2s_data::{InferenceBatch, Vocab};
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

impl<B: Backend, M: StepDecoder<B>> Strategy<B, M> for BeamSearch {
    fn decode(&self, model: &M, batch: &InferenceBatch<B>) -> Vec<Vec<Hypothesis>> {
        let device = batch.source.device();
        let src_len = batch.source.dims()[1];
        let groups = self.groups.max(1);
        let per_group = self.beams_per_group();
        let n_best = self.n_best.clamp(1, per_group * groups);
        let (memory, state) = model.start(batch.source.clone(), &batch.source_lengths);
        // Every group starts from `<sos>`.
        let first_rows: Vec<usize> = (0..batch.len())
            .flat_map(|i| std::iter::repeat_n(i, groups))
            .collect();
        let (mut memory, mut state) = if groups > 1 {
            model.select_rows(&memory, state, &first_rows)
        } else {
            (memory, state)
        };
        let mut sentences: Vec<Sentence> = (0..batch.len())
            .map(|i| Sentence {
                row: i,
                max_len: self.sentence_max_len(batch.source_lengths[i]),
                beams: (0..groups)
                    .map(|g| Beam {
                        tokens: Vec::new(),
                        score: 0.0,
                        group: g,
                        attention: self.keep_attention.then(Vec::new),
                    })
                    .collect(),
                finished: Vec::new(),
            })
            .collect();
        let mut active: Vec<usize> = (0..batch.len()).collect();
        // The sentence of each row of `memory`: while it does not change, a step reorders
        // the state only (beams of one sentence share its memory rows).
        let mut memory_rows: Vec<usize> = first_rows;
        for step in 0.. {
            if active.is_empty() {
                break;
            }
            // The rows of each sentence in the layout: the block of its first row. Rows of
            // sentences that have finished (left in place, see below) get `<eos>`, and their
            // results are not read.
            let mut block_start = vec![usize::MAX; sentences.len()];
            for (row, &s) in memory_rows.iter().enumerate().rev() {
                block_start[s] = row;
            }
            let tokens: Vec<usize> = memory_rows
                .iter()
                .enumerate()
                .map(|(row, &s)| {
                    sentences[s]
                        .beams
                        .get(row - block_start[s])
                        .and_then(|b| b.tokens.last())
                        .map_or(
                            if step == 0 { Vocab::SOS } else { Vocab::EOS } as usize,
                            |&t| t as usize,
                        )
                })
                .collect();
            let mut out =
                step_logprobs(model, &memory, &tokens, state, self.keep_attention, &device);
            state = out.state;
            let v = out.vocab;
            // The new beams' rows in this step's layout, per sentence.
            let mut parents: Vec<Vec<usize>> = vec![Vec::new(); sentences.len()];
            let mut still_active = Vec::with_capacity(active.len());
            for &s in &active {
                let sentence = &mut sentences[s];
                let rows = block_start[s]..block_start[s] + sentence.beams.len();
                for (b, row) in rows.clone().enumerate() {
                    let logp = &mut out.logp[row * v..(row + 1) * v];
                    self.processors.apply(&sentence.beams[b].tokens, logp);
                    LogitsProcessors::apply_min_len(step, self.min_len, logp);
                }
                let true_len = batch.source_lengths[sentence.row];
                let weights = out.attention.as_deref();
                let attention_of = |row: usize, beam: &Beam| {
                    beam.attention.as_ref().map(|a| {
                        let mut a = a.clone();
                        if let Some(w) = weights {
                            a.push(attention_row(w, row, src_len, true_len));
                        }
                        a
                    })
                };
                if step == sentence.max_len {
                    // Last step: each beam ends, with `<eos>` if that is its best token.
                    for (b, row) in rows.enumerate() {
                        let beam = &sentence.beams[b];
                        let logp = &out.logp[row * v..(row + 1) * v];
                        let (id, best) = argmax(logp);
                        let (score, len) = if id == Vocab::EOS as usize {
                            (beam.score + best, beam.tokens.len() + 1)
                        } else {
                            (beam.score, beam.tokens.len().max(1))
                        };
                        let hyp = Hypothesis {
                            tokens: beam.tokens.clone(),
                            score: self.length_penalty.apply(score, len),
                            attention: beam.attention.clone(),
                        };
                        sentence.finished.push(hyp);
                    }
                    sentence.beams.clear();
                    continue;
                }
                let mut used = vec![0usize; v];
                let mut new_beams: Vec<Beam> = Vec::with_capacity(per_group * groups);
                let mut new_parents: Vec<usize> = Vec::new();
                for g in 0..groups {
                    let mut candidates: Vec<Candidate> = Vec::new();
                    for (b, row) in rows.clone().enumerate() {
                        let beam = &sentence.beams[b];
                        if beam.group != g {
                            continue;
                        }
                        let logp = &out.logp[row * v..(row + 1) * v];
                        for (token, &lp) in logp.iter().enumerate() {
                            if lp == f32::NEG_INFINITY {
                                continue;
                            }
                            let score = beam.score + lp;
                            let adjusted = score - self.diversity * used[token] as f32;
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
                    let mut added = 0;
                    let mut chosen = Vec::new();
                    for (rank, c) in candidates.iter().enumerate() {
                        let parent = &sentence.beams[c.beam];
                        let row = rows.start + c.beam;
                        if c.token == Vocab::EOS as usize {
                            // An `<eos>` outside the group's best `per_group` is not taken.
                            // A taken `<eos>` counts as used, so later groups pay the
                            // diversity penalty for ending here too.
                            if rank < per_group {
                                chosen.push(c.token);
                                sentence.finished.push(Hypothesis {
                                    tokens: parent.tokens.clone(),
                                    score: self
                                        .length_penalty
                                        .apply(c.score, parent.tokens.len() + 1),
                                    attention: attention_of(row, parent),
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
                            attention: attention_of(row, parent),
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
                if sentence.is_done(n_best, self.length_penalty) {
                    sentence.beams.clear();
                } else {
                    parents[s] = new_parents;
                    still_active.push(s);
                }
            }
            active = still_active;
            if !active.is_empty() {
                let live: usize = active.iter().map(|&s| sentences[s].beams.len()).sum();
                let same_blocks = active.iter().all(|&s| {
                    let len = sentences[s].beams.len();
                    memory_rows.get(block_start[s] + len - 1) == Some(&s)
                        && memory_rows.get(block_start[s] + len) != Some(&s)
                });
                if same_blocks && memory_rows.len() - live <= memory_rows.len() / DEAD_ROWS_KEPT {
                    // Every open sentence keeps its rows: reorder the state alone. Rows of
                    // finished sentences stay where they are (see `DEAD_ROWS_KEPT`).
                    let rows: Vec<usize> = memory_rows
                        .iter()
                        .enumerate()
                        .map(|(row, &s)| {
                            parents[s].get(row - block_start[s]).copied().unwrap_or(row)
                        })
                        .collect();
                    state = model.select_state_rows(state, &rows);
                } else {
                    let rows: Vec<usize> = active
                        .iter()
                        .flat_map(|&s| parents[s].iter().copied())
                        .collect();
                    let (m, st) = model.select_rows(&memory, state, &rows);
                    memory = m;
                    state = st;
                    memory_rows = active
                        .iter()
                        .flat_map(|&s| std::iter::repeat_n(s, sentences[s].beams.len()))
                        .collect();
                }
            }
        }
        sentences
            .into_iter()
            .map(|mut s| {
                s.finished.sort_by(by_score_desc);
                s.finished.truncate(n_best);
                s.finished
            })
            .collect()
    }
}
