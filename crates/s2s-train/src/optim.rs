//! Adam for s2s models: Burn's `Adam` (same settings, same formula), with each parameter's
//! element-wise update in one pass on flex or a few libtorch kernels
//! ([`s2s_tensor::adam`]), and the parameters shared out among threads.
//!
//! After the workers of [`batch_gradients`](crate::batch_gradients) have computed a batch's
//! gradients, the optimizer step runs alone: with Burn's `Adam`, on one core, about a tenth
//! of a training step of the g2p-bench model on libtorch while the other core waited.
//!
//! Moments are kept per parameter id, so that the optimizer follows the parameters through
//! [`Seq2Seq::fork`](s2s_nn::Seq2Seq) and every step of the training loop. A parameter
//! without a gradient in a step keeps its values and its moments.

use burn::config::Config;
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Shape, Tensor};
use s2s_tensor::adam::{adam_update, AdamStep};
use s2s_tensor::{S2sAutodiffBackend, S2sBackend};
use std::collections::HashMap;

/// Settings of [`Adam`]: Burn's `AdamConfig` defaults (which differ from PyTorch's only in
/// epsilon, 1e-5 against 1e-8).
#[derive(Config, Debug)]
pub struct AdamConfig {
    /// Decay of the first moment.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of the second moment.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added to the denominator, for numerical stability.
    #[config(default = 1e-5)]
    pub epsilon: f32,
    /// Decoupled weight decay (AdamW, Loshchilov & Hutter): before each update a parameter
    /// is scaled by `1 - lr * weight_decay`. 0 is plain Adam.
    #[config(default = 0.0)]
    pub weight_decay: f32,
}

impl AdamConfig {
    /// An optimizer that updates the parameters on up to `threads` threads (at least one;
    /// always one on Burn's CubeCL backends, wgpu, whose tensors Burn 0.21 does not use
    /// safely from several threads).
    pub fn init<B: AutodiffBackend>(&self, threads: usize) -> Adam<B> {
        Adam {
            config: self.clone(),
            moments: HashMap::new(),
            threads: threads.max(1),
        }
    }
}

/// One parameter's moments and the number of steps it has taken.
struct Moments<B: Backend> {
    steps: i32,
    moment_1: Tensor<B, 1>,
    moment_2: Tensor<B, 1>,
}

/// The Adam optimizer; see the [module](self) documentation.
pub struct Adam<B: AutodiffBackend> {
    config: AdamConfig,
    moments: HashMap<ParamId, Moments<B::InnerBackend>>,
    threads: usize,
}

/// One parameter's update: its values and gradient flattened, and its moments so far.
struct Job<B: Backend> {
    id: ParamId,
    /// The parameter's shape and whether it requires a gradient.
    shape: Shape,
    require_grad: bool,
    param: Tensor<B, 1>,
    grad: Tensor<B, 1>,
    moments: Option<Moments<B>>,
}

/// A parameter's new values and moments.
struct Updated<B: Backend> {
    id: ParamId,
    shape: Shape,
    require_grad: bool,
    param: Tensor<B, 1>,
    moments: Moments<B>,
}

impl<B: S2sBackend> Job<B> {
    fn run(self, config: &AdamConfig, lr: f64) -> Updated<B> {
        let steps = self.moments.as_ref().map_or(0, |m| m.steps) + 1;
        let (b1, b2, eps) = (config.beta_1, config.beta_2, config.epsilon);
        let step = AdamStep::new(b1, b2, eps, lr as f32, steps);
        let moments = self.moments.map(|m| (m.moment_1, m.moment_2));
        let param = if config.weight_decay > 0.0 {
            self.param.mul_scalar(1.0 - lr as f32 * config.weight_decay)
        } else {
            self.param
        };
        let out = adam_update(param, self.grad, moments, step);
        Updated {
            id: self.id,
            shape: self.shape,
            require_grad: self.require_grad,
            param: out.param,
            moments: Moments {
                steps,
                moment_1: out.moment_1,
                moment_2: out.moment_2,
            },
        }
    }
}

impl<B: S2sAutodiffBackend> Adam<B> {
    /// One step with learning rate `lr`: every parameter of `module` with a gradient in
    /// `grads` is updated; the others are left as they are.
    ///
    /// The parameters with a gradient are taken out of `module` for the update, so that a
    /// backend that can write in place (libtorch) finds their values held by nothing else.
    pub fn step<M: AutodiffModule<B>>(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        let mut take = Take::<B> {
            grads,
            moments: &mut self.moments,
            jobs: Vec::new(),
        };
        let module = module.map(&mut take);
        let jobs = take.jobs;
        let threads = match crate::parallel::single_threaded_autodiff::<B>() {
            false => self.threads.min(jobs.len()).max(1),
            true => 1,
        };
        let config = &self.config;
        let run = |jobs: Vec<Job<B::InnerBackend>>| -> Vec<Updated<B::InnerBackend>> {
            jobs.into_iter().map(|job| job.run(config, lr)).collect()
        };
        let results = if threads <= 1 {
            run(jobs)
        } else {
            let shares = share_out(jobs, threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = shares
                    .into_iter()
                    .map(|share| scope.spawn(|| run(share)))
                    .collect();
                handles
                    .into_iter()
                    // A panic in an update is a bug in a backend: pass it on as is.
                    .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                    .collect()
            })
        };
        let mut updated = HashMap::with_capacity(results.len());
        for done in results {
            self.moments.insert(done.id, done.moments);
            updated.insert(done.id, (done.param, done.shape, done.require_grad));
        }
        module.map(&mut Replace::<B> { updated })
    }
}

/// One parameter's optimizer state, as saved with a run ([`Adam::export`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SavedMoments {
    /// Steps the parameter has taken.
    pub steps: i32,
    /// First moment, flattened.
    pub moment_1: Vec<f32>,
    /// Second moment, flattened.
    pub moment_2: Vec<f32>,
}

impl<B: AutodiffBackend> Adam<B> {
    /// The moments of every float parameter of `module`, in visiting order (`None` for a
    /// parameter that has not taken a step).
    pub fn export<M: AutodiffModule<B>>(&self, module: &M) -> Vec<Option<SavedMoments>> {
        struct Export<'a, B: Backend> {
            moments: &'a HashMap<ParamId, Moments<B>>,
            out: Vec<Option<SavedMoments>>,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Export<'_, B::InnerBackend> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.out
                    .push(self.moments.get(&param.id).map(|m| SavedMoments {
                        steps: m.steps,
                        moment_1: s2s_tensor::ops::to_vec_f32(m.moment_1.clone()),
                        moment_2: s2s_tensor::ops::to_vec_f32(m.moment_2.clone()),
                    }));
            }
        }
        let mut export = Export::<B::InnerBackend> {
            moments: &self.moments,
            out: Vec::new(),
        };
        module.visit(&mut export);
        export.out
    }

    /// Replaces the moments with `saved` ([`export`](Self::export) of a module with the same
    /// parameters in the same order). Errors if the count or a size differs.
    pub fn import<M: AutodiffModule<B>>(
        &mut self,
        module: &M,
        saved: Vec<Option<SavedMoments>>,
    ) -> Result<(), String> {
        struct Import<B: Backend> {
            saved: std::vec::IntoIter<Option<SavedMoments>>,
            moments: HashMap<ParamId, Moments<B>>,
            index: usize,
            error: Option<String>,
        }
        impl<B: AutodiffBackend> ModuleVisitor<B> for Import<B::InnerBackend> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let index = self.index;
                self.index += 1;
                let Some(entry) = self.saved.next() else {
                    self.error
                        .get_or_insert(format!("no moments for parameter {index}"));
                    return;
                };
                let Some(m) = entry else { return };
                let n = param.lazy_shape().num_elements();
                if m.moment_1.len() != n || m.moment_2.len() != n {
                    self.error.get_or_insert(format!(
                        "parameter {index} has {n} values, its saved moments {} and {}",
                        m.moment_1.len(),
                        m.moment_2.len()
                    ));
                    return;
                }
                let device = param.lazy_device();
                let tensor = |v: Vec<f32>| {
                    Tensor::<B::InnerBackend, 1>::from_data(
                        burn::tensor::TensorData::new(v, [n]),
                        &device,
                    )
                };
                self.moments.insert(
                    param.id,
                    Moments {
                        steps: m.steps,
                        moment_1: tensor(m.moment_1),
                        moment_2: tensor(m.moment_2),
                    },
                );
            }
        }
        let count = saved.len();
        let mut import = Import::<B::InnerBackend> {
            saved: saved.into_iter(),
            moments: HashMap::new(),
            index: 0,
            error: None,
        };
        module.visit(&mut import);
        if let Some(e) = import.error {
            return Err(e);
        }
        if import.index != count {
            return Err(format!(
                "{count} saved parameters, but the model has {}",
                import.index
            ));
        }
        self.moments = import.moments;
        Ok(())
    }
}

/// The jobs in `threads` shares of about equal size (largest first, each to the share with
/// the fewest values so far).
fn share_out<B: Backend>(mut jobs: Vec<Job<B>>, threads: usize) -> Vec<Vec<Job<B>>> {
    jobs.sort_by_key(|job| std::cmp::Reverse(job.param.dims()[0]));
    let mut shares: Vec<(usize, Vec<Job<B>>)> = (0..threads).map(|_| (0, Vec::new())).collect();
    for job in jobs {
        let share = shares
            .iter_mut()
            .min_by_key(|(size, _)| *size)
            .expect("at least one share");
        share.0 += job.param.dims()[0];
        share.1.push(job);
    }
    shares.into_iter().map(|(_, jobs)| jobs).collect()
}

/// Takes every parameter that has a gradient in `grads` out of the module, with its gradient
/// and moments, and leaves a one-element stand-in for [`Replace`] to fill.
struct Take<'a, B: AutodiffBackend> {
    grads: GradientsParams,
    moments: &'a mut HashMap<ParamId, Moments<B::InnerBackend>>,
    jobs: Vec<Job<B::InnerBackend>>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Take<'_, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) else {
            return param;
        };
        let (id, tensor, mapper) = param.consume();
        let shape = tensor.shape();
        let n = shape.num_elements();
        let stand_in = Tensor::empty([1; D], &tensor.device());
        self.jobs.push(Job {
            id,
            shape,
            require_grad: tensor.is_require_grad(),
            param: tensor.inner().reshape([n]),
            grad: grad.reshape([n]),
            moments: self.moments.remove(&id),
        });
        Param::from_mapped_value(id, stand_in, mapper)
    }
}

/// Puts the updated values in place of the stand-ins of [`Take`].
struct Replace<B: AutodiffBackend> {
    updated: HashMap<ParamId, (Tensor<B::InnerBackend, 1>, Shape, bool)>,
}

impl<B: AutodiffBackend> ModuleMapper<B> for Replace<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let tensor = match self.updated.remove(&id) {
            Some((values, shape, require_grad)) => {
                let mut new = Tensor::from_inner(values.reshape(shape));
                if require_grad {
                    new = new.require_grad();
                }
                new
            }
            None => tensor,
        };
        Param::from_mapped_value(id, tensor, mapper)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::optim::Optimizer;
    use burn::tensor::Distribution;
    use s2s_nn::{CellKind, Seq2Seq, Seq2SeqConfig};

    s2s_tensor::for_each_backend! {
        type AB = TestAutodiffBackend;

        /// Every parameter of `model`, flattened, in visiting order, with its id.
        fn params(model: &Seq2Seq<AB>) -> Vec<(ParamId, Vec<f32>)> {
            struct Collect(Vec<(ParamId, Vec<f32>)>);
            impl ModuleVisitor<AB> for Collect {
                fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
                    assert!(param.val().is_require_grad(), "a parameter lost its gradient tracking");
                    let values = param.val().inner().flatten::<1>(0, D - 1);
                    self.0.push((param.id, s2s_tensor::ops::to_vec_f32(values)));
                }
            }
            let mut c = Collect(Vec::new());
            model.visit(&mut c);
            c.0
        }

        /// Random gradients for every parameter of `model` but those whose index is in `skip`.
        fn gradients(model: &Seq2Seq<AB>, skip: &[usize]) -> GradientsParams {
            struct Random<'a>(GradientsParams, usize, &'a [usize]);
            impl ModuleVisitor<AB> for Random<'_> {
                fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
                    if !self.2.contains(&self.1) {
                        let shape = param.val().shape();
                        let grad = Tensor::<TestBackend, D>::random(shape, Distribution::Normal(0.0, 0.1), &param.val().device());
                        self.0.register::<TestBackend, D>(param.id, grad);
                    }
                    self.1 += 1;
                }
            }
            let mut r = Random(GradientsParams::new(), 0, skip);
            model.visit(&mut r);
            r.0
        }

        #[test]
        fn steps_equal_burns_adam() {
            let device = device();
            for threads in [1, 3] {
                let config = Seq2SeqConfig::new(9, 7)
                    .with_d_embed(3)
                    .with_d_hidden(5)
                    .with_d_decoder(4)
                    .with_d_attention(2)
                    .with_cell(CellKind::Lstm);
                // Read once, so that the lazily initialised parameters take their values
                // before the model is cloned (each clone would draw its own otherwise).
                let start: Seq2Seq<AB> = s2s_tensor::backend::seeded::<AB, _>(&device, 5, || {
                    let model = config.init(&device);
                    params(&model);
                    model
                });
                let mut ours = AdamConfig::new().init::<AB>(threads);
                let mut burns = burn::optim::AdamConfig::new().init::<AB, Seq2Seq<AB>>();
                let (mut a, mut b) = (start.clone(), start.clone());
                // Step 2 leaves out two parameters, which must keep their values and
                // moments (their next step is then their second, not their third).
                for (step, skip) in [vec![], vec![0, 3], vec![], vec![]].iter().enumerate() {
                    let grads = gradients(&a, skip);
                    // The same gradients for both, by parameter id.
                    let mut copy = GradientsParams::new();
                    struct Copy<'a>(&'a GradientsParams, &'a mut GradientsParams);
                    impl ModuleVisitor<AB> for Copy<'_> {
                        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<AB, D>>) {
                            if let Some(g) = self.0.get::<TestBackend, D>(param.id) {
                                self.1.register::<TestBackend, D>(param.id, g);
                            }
                        }
                    }
                    a.visit(&mut Copy(&grads, &mut copy));
                    let lr = 1e-2 * (step + 1) as f64;
                    a = ours.step(lr, a, grads);
                    b = burns.step(lr, b, copy);
                    let (pa, pb) = (params(&a), params(&b));
                    assert_eq!(pa.len(), pb.len());
                    for (i, ((ia, va), (ib, vb))) in pa.iter().zip(&pb).enumerate() {
                        assert_eq!(ia, ib);
                        for (x, y) in va.iter().zip(vb) {
                            assert!((x - y).abs() <= 1e-6 + 1e-5 * y.abs(), "{threads} threads, step {step}, parameter {i}: {x} vs {y}");
                        }
                    }
                }
                // The parameters moved.
                let moved = params(&a).iter().zip(params(&start)).any(|((_, x), (_, y))| x != &y);
                assert!(moved);
            }
        }
    }
}
