//! Workers on the CPU: independent jobs (a training batch's shares, decoding batches) run on
//! the threads of rayon's global pool, each thread taking the next job when it is free.
//!
//! burn-flex splits its larger kernels (matrix products above about 192³ multiply-adds, and
//! element-wise work over large tensors) over rayon's global pool. From a thread outside the
//! pool, every such kernel hands its pieces to the pool's threads and sleeps until they are
//! done; from a thread of the pool, it runs them itself and lets an idle thread take some.
//! Workers that run on the pool therefore spend their time in the kernels rather than in
//! handing work over and waking up (the README's design notes give the figures). libtorch's
//! kernels have threads of their own; its workers run on the pool all the same.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `job(0)`, ..., `job(jobs - 1)` on up to `threads` threads of rayon's global pool
/// (at most as many as it has, at least one), each running one job at a time and taking the
/// next one left, in order, when it is done; returns the results in job order.
///
/// A thread starts a job only after finishing its previous one, never while it waits
/// inside one for the pool. A job may therefore hold a lock across the kernels it runs
/// (Burn's autodiff holds a graph's lock for a whole backward pass, and then takes every
/// graph's in turn) without a second job on the same thread waiting for it.
///
/// A panic in a job is passed on to the caller once every thread has finished.
pub fn each_on_pool<R, F>(jobs: usize, threads: usize, job: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize) -> R + Sync,
{
    let threads = threads.min(jobs).min(rayon::current_num_threads()).max(1);
    let next = AtomicUsize::new(0);
    // One call per thread of the pool (a broadcast), so that no thread runs two of them.
    let done: Vec<Vec<(usize, R)>> = rayon::broadcast(|ctx| {
        let mut done = Vec::new();
        if ctx.index() < threads {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= jobs {
                    break;
                }
                done.push((k, job(k)));
            }
        }
        done
    });
    let mut results: Vec<(usize, R)> = done.into_iter().flatten().collect();
    results.sort_unstable_by_key(|&(k, _)| k);
    debug_assert!(results.iter().enumerate().all(|(i, &(k, _))| i == k));
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[test]
    fn every_job_runs_once_and_results_keep_their_order() {
        for jobs in [0, 1, 2, 3, 7, 40] {
            for threads in [0, 1, 2, 5] {
                let runs = AtomicUsize::new(0);
                let out = each_on_pool(jobs, threads, |k| {
                    runs.fetch_add(1, Ordering::Relaxed);
                    k * k
                });
                assert_eq!(out, (0..jobs).map(|k| k * k).collect::<Vec<_>>());
                assert_eq!(runs.into_inner(), jobs);
            }
        }
    }

    #[test]
    fn jobs_run_on_the_pool() {
        for limit in [1, 2] {
            let threads = Mutex::new(HashSet::new());
            each_on_pool(8, limit, |_| {
                let index = rayon::current_thread_index().expect("a thread of the pool");
                threads.lock().unwrap().insert(index);
            });
            let threads = threads.into_inner().unwrap();
            assert!(!threads.is_empty() && threads.len() <= limit);
        }
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        let caught = std::panic::catch_unwind(|| {
            each_on_pool(3, 2, |k| {
                if k == 1 {
                    panic!("job 1 failed");
                }
                k
            })
        });
        let message = caught.expect_err("the panic is passed on");
        assert_eq!(message.downcast_ref::<&str>(), Some(&"job 1 failed"));
    }
}
