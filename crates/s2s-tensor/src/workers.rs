//! Workers on the CPU: independent jobs (decoding batches, a training batch's shares) run
//! side by side on threads that belong to a rayon pool.
//!
//! burn-flex splits its larger kernels (matrix products above about 192³ multiply-adds, and
//! element-wise work over large tensors) over rayon's pool. From a thread outside any pool,
//! every such kernel hands its pieces to the global pool's threads and sleeps until they are
//! done; from a thread of a pool, it runs them there. Workers on pool threads therefore
//! spend their time in the kernels rather than in handing work over and waking up (the
//! README's design notes give the figures). libtorch's kernels have threads of their own;
//! its workers run the same way.
//!
//! Two ways, for two kinds of job:
//! - [`each_on_pool`]: on the global pool, whose idle threads also take pieces of the
//!   busy ones' kernels. A thread that waits inside a job for such a piece may meanwhile
//!   run another job, so a job must not hold a lock that another job can wait for.
//!   Decoding holds none.
//! - [`each_apart`]: each job on a pool of one thread of its own, where every kernel runs
//!   on that thread and no other job can start inside it. Burn's autodiff holds a graph's
//!   lock through a whole backward pass, and then takes every graph's lock in turn, so
//!   training shares run this way: on the global pool, a thread waiting inside one share's
//!   backward pass could start another share, which would wait for that lock forever.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

/// Runs `job(0)`, ..., `job(jobs - 1)` on up to `threads` threads of rayon's global pool
/// (at least one), each taking the next job left, in order, when it is free; returns the
/// results in job order. See the [module](self) documentation for what a job must not do.
///
/// A panic in a job is passed on to the caller once every job has finished.
pub fn each_on_pool<R, F>(jobs: usize, threads: usize, job: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize) -> R + Sync,
{
    let results: Vec<Mutex<Option<R>>> = (0..jobs).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    rayon::scope(|scope| {
        for _ in 0..threads.clamp(1, jobs.max(1)) {
            scope.spawn(|_| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= jobs {
                    break;
                }
                let r = job(k);
                *results[k].lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(PoisonError::into_inner)
                .expect("every job ran")
        })
        .collect()
}

/// Runs `job(0)`, ..., `job(jobs - 1)` side by side, each on a rayon pool of one thread of
/// its own (pool `k` for job `k`; the pools are made on first use and kept), and returns the
/// results in job order. A kernel that splits its work over the pool runs it all on the
/// job's thread, and the thread never starts another job inside one, so a job may hold
/// locks across its kernels. Calls from several threads at once queue their `k`th jobs on
/// the same pool, where they run one after another.
///
/// A panic in a job is passed on to the caller once every job has finished.
pub fn each_apart<R, F>(jobs: usize, job: F) -> Vec<R>
where
    R: Send,
    F: Fn(usize) -> R + Sync,
{
    static POOLS: Mutex<Vec<&'static rayon::ThreadPool>> = Mutex::new(Vec::new());
    let pools: Vec<&'static rayon::ThreadPool> = {
        let mut pools = POOLS.lock().unwrap_or_else(PoisonError::into_inner);
        while pools.len() < jobs {
            let k = pools.len();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .thread_name(move |_| format!("s2s-worker-{k}"))
                .build()
                .unwrap_or_else(|e| panic!("could not start worker thread {k}: {e}"));
            // Kept for the life of the process, as rayon's global pool is.
            pools.push(Box::leak(Box::new(pool)));
        }
        pools[..jobs].to_vec()
    };
    let job = &job;
    std::thread::scope(|scope| {
        let handles: Vec<_> = pools
            .iter()
            .enumerate()
            .map(|(k, pool)| scope.spawn(move || pool.install(|| job(k))))
            .collect();
        let results: Vec<std::thread::Result<R>> = handles.into_iter().map(|h| h.join()).collect();
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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
            let out = each_apart(jobs, |k| k + 1);
            assert_eq!(out, (1..=jobs).collect::<Vec<_>>());
        }
    }

    #[test]
    fn jobs_run_on_pool_threads() {
        let global = Mutex::new(HashSet::new());
        each_on_pool(8, 2, |_| {
            let index = rayon::current_thread_index().expect("a thread of the pool");
            global.lock().unwrap().insert(index);
        });
        assert!(global.into_inner().unwrap().len() <= 2);
        let own = each_apart(3, |_| {
            assert_eq!(rayon::current_num_threads(), 1, "a pool of one thread");
            std::thread::current().name().map(str::to_owned)
        });
        let names: HashSet<_> = own.into_iter().flatten().collect();
        assert_eq!(names.len(), 3, "each job on a thread of its own");
    }

    /// Runs `f` on a thread of its own and fails if it has not finished within `secs`: a
    /// deadlock fails the test instead of hanging it (the stuck thread ends with the process).
    fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        match rx.recv_timeout(std::time::Duration::from_secs(secs)) {
            Ok(value) => value,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("did not finish within {secs} s: a deadlock")
            }
            // The thread panicked before sending: its panic message is already printed.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the job panicked"),
        }
    }

    #[test]
    fn jobs_apart_may_hold_a_lock_across_parallel_kernels() {
        // Each job holds a lock of its own while it runs a parallel loop, and then takes
        // every job's lock in turn, as Burn's autodiff does in a backward pass. Several
        // callers at once, so that jobs could meet inside each other on a shared pool.
        let want: u64 = (0..20_000u64).map(|i| i % 7).sum();
        let sums = within(120, || {
            let locks: Vec<Mutex<()>> = (0..3).map(|_| Mutex::new(())).collect();
            std::thread::scope(|scope| {
                let callers: Vec<_> = (0..3)
                    .map(|_| {
                        scope.spawn(|| {
                            (0..20)
                                .flat_map(|_| {
                                    each_apart(3, |k| {
                                        let sum: u64 = {
                                            let _held = locks[k].lock().unwrap();
                                            use rayon::prelude::*;
                                            (0..20_000u64).into_par_iter().map(|i| i % 7).sum()
                                        };
                                        for lock in &locks {
                                            drop(lock.lock().unwrap());
                                        }
                                        sum
                                    })
                                })
                                .collect::<Vec<u64>>()
                        })
                    })
                    .collect();
                callers
                    .into_iter()
                    .flat_map(|c| c.join().unwrap())
                    .collect::<Vec<u64>>()
            })
        });
        assert_eq!(sums.len(), 3 * 20 * 3);
        assert!(sums.iter().all(|&s| s == want));
    }

    #[test]
    fn a_panic_reaches_the_caller() {
        for apart in [false, true] {
            let caught = std::panic::catch_unwind(|| {
                let job = |k: usize| {
                    if k == 1 {
                        panic!("job 1 failed");
                    }
                    k
                };
                match apart {
                    false => each_on_pool(3, 2, job),
                    true => each_apart(3, job),
                }
            });
            let message = caught.expect_err("the panic is passed on");
            assert_eq!(message.downcast_ref::<&str>(), Some(&"job 1 failed"));
        }
    }
}
