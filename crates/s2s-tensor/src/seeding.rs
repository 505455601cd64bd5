//! Seeded initialisation: Burn's random generators are global per backend, so every seeded
//! draw goes through one process-wide lock.

/// Runs `init` right after seeding the backend's random generator, holding a process-wide
/// lock so that no other `seeded` call draws from the generator in between.
///
/// Burn's generators are global per backend: two threads (tests run in parallel) that seed
/// and then initialise a model can interleave their draws, so the same seed would give
/// different weights from run to run. Every seeded initialisation in s2s goes through here.
pub fn seeded<B: burn::tensor::backend::Backend, T>(
    device: &B::Device,
    seed: u64,
    init: impl FnOnce() -> T,
) -> T {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    B::seed(device, seed);
    init()
}

/// [`seeded`] for a module: initialises `init()`'s parameters before the lock is released.
///
/// Burn creates parameters lazily: their values are drawn at the first read, and every clone
/// of a parameter not yet read draws its own. A model that is cloned before it is read (the
/// training workers' forks, a strategy's copy) would then hold different weights in each
/// clone, drawn in whatever order the threads ran. Every model that s2s trains or compares is
/// made here.
pub fn seeded_module<B: burn::tensor::backend::Backend, M: burn::module::Module<B>>(
    device: &B::Device,
    seed: u64,
    init: impl FnOnce() -> M,
) -> M {
    struct Touch;
    impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            param.val();
        }
    }
    seeded::<B, _>(device, seed, || {
        let module = init();
        module.visit(&mut Touch);
        module
    })
}
