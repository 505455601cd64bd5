//! Dynamic batching: inputs of requests that arrive together are decoded as one batch.
//!
//! A [`Batcher`] owns a thread that decodes with a shared [`Translator`]. [`Batcher::submit`]
//! queues a request (its source ids and decoding options) without blocking, or refuses it
//! when `queue` requests are already waiting or being decoded. The thread takes the oldest
//! request and every request queued behind it, waits up to `max_wait` for more (or until
//! `max_batch` inputs are waiting), decodes every waiting input that shares the oldest
//! request's options as one call of [`Translator::decode_ids`] (length-sorted batches shared
//! among its workers), and sends each request its own hypotheses. Requests with other options
//! wait for the next round, oldest first. Under load, requests gather while the previous
//! batch decodes, so batches form without waiting. Since decoding is batch-invariant, every
//! input gets what it would get decoded alone (the same tokens; scores equal to 1e-5
//! relative, as float sums may round differently).

use crate::options::DecodeOptions;
use crate::translator::Translator;
use s2s_decode::{Decoding, Hypothesis};
use s2s_tensor::S2sBackend;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the batcher gathers requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatcherConfig {
    /// The longest a request waits for others to join its batch.
    pub max_wait: Duration,
    /// Inputs decoded together at most (a request with more is decoded alone).
    pub max_batch: usize,
    /// Requests queued or being decoded at most; [`Batcher::submit`] refuses more.
    pub queue: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        BatcherConfig {
            max_wait: Duration::ZERO,
            max_batch: 256,
            queue: 1024,
        }
    }
}

/// Why a request was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds `queue` requests already.
    #[error("the queue is full")]
    Full,
    /// The batcher has stopped.
    #[error("the batcher has stopped")]
    Stopped,
}

/// The hypotheses of one request: a list per input, best first.
pub type Reply = Vec<Vec<Hypothesis>>;

/// Where a request's hypotheses go: called once, on the decoding thread.
pub type ReplyFn = Box<dyn FnOnce(Reply) + Send>;

struct Job {
    sources: Vec<Vec<u32>>,
    options: DecodeOptions,
    strategy: Decoding,
    reply: ReplyFn,
}

/// A decoding thread fed by a bounded queue of requests (see the module docs).
pub struct Batcher {
    queue: Option<Sender<Job>>,
    /// Requests submitted and not answered yet.
    waiting: Arc<AtomicUsize>,
    stats: Arc<Counters>,
    capacity: usize,
    thread: Option<JoinHandle<()>>,
}

impl Batcher {
    /// Starts the decoding thread.
    pub fn start<B: S2sBackend>(translator: Arc<Translator<B>>, config: BatcherConfig) -> Self
    where
        B::Device: Send + Sync,
        Translator<B>: Send + Sync,
    {
        let (queue, jobs) = mpsc::channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Counters::default());
        let (answered, counted) = (waiting.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name("s2s-batcher".into())
            .spawn(move || run(&translator, &jobs, config, &answered, &counted))
            .expect("the batcher thread starts");
        Batcher {
            queue: Some(queue),
            waiting,
            stats,
            capacity: config.queue.max(1),
            thread: Some(thread),
        }
    }

    /// Queues the sources of one request, to be decoded with `strategy` (which `options`
    /// describe: requests are batched together when their options are equal). Returns where
    /// the hypotheses will arrive, one list per source in order.
    pub fn submit(
        &self,
        sources: Vec<Vec<u32>>,
        options: DecodeOptions,
        strategy: Decoding,
    ) -> Result<Receiver<Reply>, SubmitError> {
        let (sender, receiver) = mpsc::channel();
        // A client that went away no longer listens; that is not an error here.
        let reply = Box::new(move |r| {
            let _ = sender.send(r);
        });
        self.submit_with(sources, options, strategy, reply)?;
        Ok(receiver)
    }

    /// [`submit`](Self::submit) with the hypotheses handed to `reply` (on the decoding
    /// thread; it should only pass them on, as to an async task's channel).
    pub fn submit_with(
        &self,
        sources: Vec<Vec<u32>>,
        options: DecodeOptions,
        strategy: Decoding,
        reply: ReplyFn,
    ) -> Result<(), SubmitError> {
        let job = Job {
            sources,
            options,
            strategy,
            reply,
        };
        let queue = self.queue.as_ref().ok_or(SubmitError::Stopped)?;
        let capacity = self.capacity;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .map_err(|_| SubmitError::Full)?;
        queue.send(job).map_err(|_| {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            SubmitError::Stopped
        })
    }

    /// What the batcher has decoded so far.
    pub fn stats(&self) -> BatcherStats {
        BatcherStats {
            rounds: self.stats.rounds.load(Ordering::Relaxed),
            requests: self.stats.requests.load(Ordering::Relaxed),
            inputs: self.stats.inputs.load(Ordering::Relaxed),
        }
    }

    /// Stops taking requests, decodes those already queued, and waits for the thread;
    /// returns what it decoded in all.
    pub fn shutdown(mut self) -> BatcherStats {
        self.stop();
        self.stats()
    }

    fn stop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Counts of what a [`Batcher`] decoded: rounds (calls of the decoder), the requests and
/// the inputs in them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatcherStats {
    /// Rounds decoded.
    pub rounds: usize,
    /// Requests answered.
    pub requests: usize,
    /// Inputs decoded.
    pub inputs: usize,
}

#[derive(Default)]
struct Counters {
    rounds: AtomicUsize,
    requests: AtomicUsize,
    inputs: AtomicUsize,
}

/// The decoding thread's loop: until the queue is closed and every request answered.
fn run<B: S2sBackend>(
    translator: &Translator<B>,
    jobs: &Receiver<Job>,
    config: BatcherConfig,
    waiting: &AtomicUsize,
    stats: &Counters,
) {
    let mut pending: VecDeque<Job> = VecDeque::new();
    let mut open = true;
    loop {
        if pending.is_empty() {
            match jobs.recv() {
                Ok(job) => pending.push_back(job),
                Err(_) => return,
            }
        }
        let deadline = Instant::now() + config.max_wait;
        while open {
            // Everything queued already joins, whatever max_wait is: under load, requests
            // gather while the previous batch decodes.
            loop {
                match jobs.try_recv() {
                    Ok(job) => pending.push_back(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            if !open || waiting_like_first(&pending) >= config.max_batch {
                break;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            match jobs.recv_timeout(left) {
                Ok(job) => pending.push_back(job),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        let group = take_group(&mut pending, config.max_batch);
        let sources: Vec<Vec<u32>> = group.iter().flat_map(|j| j.sources.clone()).collect();
        let mut hyps = translator
            .decode_ids(&sources, &group[0].strategy)
            .into_iter();
        stats.rounds.fetch_add(1, Ordering::Relaxed);
        stats.requests.fetch_add(group.len(), Ordering::Relaxed);
        stats.inputs.fetch_add(sources.len(), Ordering::Relaxed);
        for job in group {
            let mine: Reply = hyps.by_ref().take(job.sources.len()).collect();
            (job.reply)(mine);
            waiting.fetch_sub(1, Ordering::AcqRel);
        }
        if !open && pending.is_empty() {
            return;
        }
    }
}

/// Inputs waiting with the oldest request's options.
fn waiting_like_first(pending: &VecDeque<Job>) -> usize {
    let Some(first) = pending.front() else {
        return 0;
    };
    pending
        .iter()
        .filter(|j| j.options == first.options)
        .map(|j| j.sources.len())
        .sum()
}

/// Removes the oldest request and the later ones with its options, up to `max_batch` inputs
/// in all (the oldest always, however many inputs it has).
fn take_group(pending: &mut VecDeque<Job>, max_batch: usize) -> Vec<Job> {
    let first = pending.pop_front().expect("a pending request");
    let mut count = first.sources.len();
    let mut group = vec![first];
    let mut rest = VecDeque::with_capacity(pending.len());
    for job in pending.drain(..) {
        if job.options == group[0].options && count + job.sources.len() <= max_batch {
            count += job.sources.len();
            group.push(job);
        } else {
            rest.push_back(job);
        }
    }
    *pending = rest;
    group
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{Checkpoint, CheckpointMeta, FORMAT};
    use crate::options::StrategyKind;
    use s2s_data::{Pair, TextCodec, Tokenizer};
    use s2s_nn::Seq2SeqConfig;
    use s2s_tensor::backend::DefaultBackend as B;

    fn translator() -> Translator<B> {
        let words = ["abc", "bca", "cab", "aabbcc", "c"];
        let pairs: Vec<Pair> = words
            .iter()
            .map(|w| Pair {
                source: w.to_string(),
                target: w.chars().rev().collect(),
            })
            .collect();
        let codec = TextCodec::build(&pairs, Tokenizer::Chars, Tokenizer::Chars, 1);
        let config = Seq2SeqConfig::new(codec.source_vocab.len(), codec.target_vocab.len())
            .with_d_embed(4)
            .with_d_hidden(6)
            .with_d_decoder(6)
            .with_d_attention(5);
        let device = Default::default();
        let model = s2s_tensor::backend::seeded_module::<B, _>(&device, 3, || config.init(&device));
        let checkpoint = Checkpoint {
            meta: CheckpointMeta {
                format: FORMAT,
                task: "reverse".into(),
                model: config.clone(),
                source_tokenizer: Tokenizer::Chars,
                target_tokenizer: Tokenizer::Chars,
                max_decode_len: 9,
                summary: serde_json::Value::Null,
                s2s_version: String::new(),
            },
            codec,
            model,
        };
        Translator::from_checkpoint(checkpoint, &device)
    }

    /// The project's batch invariance: the same tokens, scores equal to 1e-5 relative (a
    /// score's float sum may round differently in another batch).
    fn same(a: &[Hypothesis], b: &[Hypothesis]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(x.tokens, y.tokens);
            assert!(
                (x.score - y.score).abs() <= 1e-5 * (1.0 + y.score.abs()),
                "{x:?} {y:?}"
            );
        }
    }

    /// 24 requests from 8 threads, with two sets of options, answered with what each input
    /// gets decoded alone; after shutdown, requests are refused.
    #[test]
    fn concurrent_requests_get_what_each_input_gets_alone() {
        let translator = Arc::new(translator());
        let inputs = ["abc", "ccba", "b", "", "abcabcab", "ba", "cc", "a"];
        let greedy = DecodeOptions::default();
        let beam = DecodeOptions {
            strategy: StrategyKind::Beam,
            beam_size: 3,
            n_best: 2,
            ..Default::default()
        };
        let alone = |text: &str, options: &DecodeOptions| {
            let strategy = translator.strategy(options).unwrap();
            let ids = translator.encode(text).0;
            translator.decode_ids(&[ids], &strategy).remove(0)
        };
        let config = BatcherConfig {
            max_wait: Duration::from_millis(20),
            max_batch: 7,
            queue: 64,
        };
        let batcher = Arc::new(Batcher::start(translator.clone(), config));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let batcher = batcher.clone();
                let translator = translator.clone();
                let (greedy, beam) = (greedy.clone(), beam.clone());
                std::thread::spawn(move || {
                    (0..3)
                        .map(|r| {
                            let options = if (t + r) % 2 == 0 { &greedy } else { &beam };
                            let texts: Vec<&str> = (0..1 + (t + r) % 3)
                                .map(|k| inputs[(t + r + k) % 8])
                                .collect();
                            let ids = texts.iter().map(|s| translator.encode(s).0).collect();
                            let strategy = translator.strategy(options).unwrap();
                            let rx = batcher.submit(ids, options.clone(), strategy).unwrap();
                            (texts, options.clone(), rx.recv().unwrap())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut answered = 0;
        for h in handles {
            for (texts, options, reply) in h.join().unwrap() {
                assert_eq!(reply.len(), texts.len());
                for (text, hyps) in texts.iter().zip(reply) {
                    same(&hyps, &alone(text, &options));
                    answered += 1;
                }
            }
        }
        assert_eq!(answered, 8 * (1 + 2 + 3));
        let batcher = Arc::try_unwrap(batcher).ok().expect("the last handle");
        let strategy = translator.strategy(&greedy).unwrap();
        let queued = batcher
            .submit(vec![vec![4]], greedy.clone(), strategy.clone())
            .unwrap();
        let stats = batcher.shutdown();
        assert_eq!(stats.requests, 8 * 3 + 1);
        assert_eq!(stats.inputs, answered + 1);
        assert_eq!(
            queued.recv().unwrap().len(),
            1,
            "queued requests are answered"
        );
    }

    #[test]
    fn a_full_queue_refuses_requests() {
        let translator = Arc::new(translator());
        let config = BatcherConfig {
            max_wait: Duration::from_millis(200),
            max_batch: 1000,
            queue: 1,
        };
        let batcher = Batcher::start(translator.clone(), config);
        let strategy = translator.strategy(&DecodeOptions::default()).unwrap();
        let submit = || batcher.submit(vec![vec![4]], DecodeOptions::default(), strategy.clone());
        // The thread takes the first request and waits 200 ms for more; until it is
        // answered, it fills the queue (one request), and the next ones are refused.
        let mut results: Vec<_> = (0..4).map(|_| submit()).collect();
        assert!(results
            .iter()
            .any(|r| r.as_ref().err() == Some(&SubmitError::Full)));
        results.retain(|r| r.is_ok());
        for r in results {
            assert_eq!(r.unwrap().recv().unwrap().len(), 1);
        }
    }
}
