//! Project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! - `train`: trains the default task (CMUdict G2P) within a time budget on the CPU, prints
//!   test WER/PER and sample words, and leaves a model for `s2s decode`.
//! - `test`: the project's full check: formatting, clippy, and the whole test suite on every
//!   backend (flex, tch, wgpu); creates the libtorch virtualenv first when it is missing.
//! - `bench`: the backend comparison benchmark (every compiled backend and PyTorch).
//! - `check-patches`: each patched crate under `patches/` equals the published crate plus its
//!   `.patch` file ([`patches`]).
//! - `venv`: creates the project's virtualenv (`.venv`, or `$S2S_VENV`) with torch==2.9.0
//!   (libtorch for the `tch` backend, and the PyTorch reference of the benchmark) and sacrebleu.

mod patches;

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const USAGE: &str = "usage: cargo xtask <command> [options]

commands:
  train [--recipe NAME | --task g2p|eng-fra|copy|reverse|sort|double|tsv] [--epochs N]
        [--out DIR] [--time-limit SECONDS] [--backend flex|tch|wgpu] [--device DEVICE]
        [--full FILE] [--resume | --overwrite] [-- EXTRA s2s train OPTIONS]
        Train with the settings of recipes/NAME.json (default: g2p, CMUdict G2P, 15 minutes
        in all on a 2-core CPU; g2p-large, the state-of-the-art model, for hours; one recipe
        per --task), then print the test WER/PER and sample words. The run folder is --out
        (default runs/NAME): --resume continues a stopped run there, --overwrite starts it
        again.
        --task eng-fra: English->French on data/eng-fra/tutorial.tsv (the PyTorch
        tutorial's subset of Tatoeba, shipped; --full FILE trains on every pair of a full
        Tatoeba file instead), BPE, then BLEU/chrF for greedy, beam 5 and 10, with one
        reference per test line and with all references of each distinct source.
  test [--backends flex,tch,wgpu] [--no-lint] [-- CARGO TEST ARGS]
        Check formatting, run clippy with -D warnings, and run every test with the listed
        backends compiled into one build (default: flex,tch,wgpu), in profile `ci`
        (dependencies optimised, the workspace's crates at opt-level 0); clippy lints the
        workspace's crates as they compile for the tests. --no-lint skips fmt and clippy;
        arguments after `--` go to `cargo test --workspace` (e.g.
        `-- --test strategies -- diverse`) to run a few tests in the same build. tch needs
        the virtualenv (created when missing); wgpu needs a Vulkan driver (on Debian without
        a GPU: apt-get install mesa-vulkan-drivers libvulkan1). The lints include
        check-patches.
  check-patches
        Check that each patched crate under patches/ equals the published crate (downloaded
        from crates.io once, checksum checked) plus its .patch file (also part of `test`'s
        lints).
  bench [--backends flex,tch,wgpu] [--cells gru,lstm] [--threads N] [--model DIR]...
        [--rounds N] [--tch-device cpu|cuda:N] [--wgpu-device default|...]
        [--torch-device cpu|cuda] [--phases] [--workers N]
        The backend comparison benchmark (shared/docs/benchmark.md): every listed backend
        and the PyTorch reference (benches/pytorch_g2p.py) on the same model and data, in
        --rounds interleaved rounds (default 3; each figure is the median over the rounds);
        prints the table (also in target/bench/table.md). Each cell decodes with the first
        trained G2P checkpoint of that cell among --model DIR (repeatable; default runs/g2p
        and runs/g2p-lstm, from `cargo xtask train [--out runs/g2p-lstm -- --cell lstm]`),
        or warns and uses an untrained model.
        --phases adds two tables: the milliseconds of each phase of a training step
        (forward, backward, clipping, optimizer) on every side with the share of
        PyTorch's training and greedy decoding spent in matrix products; and each side's
        matrix-product work per decoded word with the words/s it allows at the best
        torch.mm rate measured on the machine.
        --workers N: s2s shares each training batch's rows, and the decoding batches,
        among N threads, each with threads/N intra-op threads (default: N = --threads on
        a CPU device, 1 on a GPU; PyTorch runs its --threads intra-op threads).
  venv  Create the virtualenv with torch==2.9.0, sacrebleu, safetensors and tokenizers (.venv,
        or $S2S_VENV).";

/// The PyTorch release whose libtorch `tch` 0.22 (burn-tch 0.21) is built against.
const TORCH_VERSION: &str = "2.9.0";
/// Python packages of the project's virtualenv.
/// The sacreBLEU that s2s-metrics follows; the live comparison tests require it in the
/// virtualenv (`S2S_REQUIRE_SACREBLEU=1`).
const SACREBLEU_VERSION: &str = "2.6.0";
/// Hugging Face's safetensors and tokenizers, the releases of the Rust crates s2s uses: the
/// interop tests read s2s's model files with `safetensors.torch.load_file` and its BPE
/// tokenizers with `tokenizers.Tokenizer`.
const SAFETENSORS_VERSION: &str = "0.7.0";
const TOKENIZERS_VERSION: &str = "0.22.2";
const VENV_PACKAGES: &[&str] = &[
    "torch==2.9.0",
    "sacrebleu==2.6.0",
    "safetensors==0.7.0",
    "tokenizers==0.22.2",
];

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(project_root());
    c
}

/// Runs `cmd`, then prints how long it took (CI's log shows where its time goes).
fn run(mut cmd: Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let start = std::time::Instant::now();
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let first = cmd
        .get_args()
        .next()
        .map(|a| a.to_string_lossy().into_owned());
    eprintln!(
        "[xtask] {program} {} took {:.0} s",
        first.unwrap_or_default(),
        start.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// The value that follows `option` on the command line.
fn option_value(it: &mut std::slice::Iter<'_, String>, option: &str) -> Result<String> {
    it.next()
        .cloned()
        .with_context(|| format!("{option} needs a value"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("train") => train(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("venv") => venv().map(|_| ()),
        Some("bench") => bench(&args[1..]),
        Some("check-patches") => patches::check(patches::Offline::Fail),
        Some("-h" | "--help" | "help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// The project's virtualenv: `$S2S_VENV`, or `.venv` in the workspace root.
fn venv_dir() -> PathBuf {
    std::env::var_os("S2S_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join(".venv"))
}

/// A ready virtualenv: its directory and the `torch/lib` folder holding libtorch.
struct Venv {
    dir: PathBuf,
    torch_lib: PathBuf,
}

impl Venv {
    fn python(&self) -> PathBuf {
        self.dir.join("bin/python")
    }

    /// Sets what building and running against libtorch needs: burn-tch's build script asks
    /// the virtualenv's `python` for libtorch (`LIBTORCH_USE_PYTORCH`), and binaries find
    /// `libtorch*.so` through the library path.
    fn apply(&self, cmd: &mut Command) {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.dir.join("bin")];
        paths.extend(std::env::split_paths(&path));
        let ld = std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default();
        let mut libs = vec![self.torch_lib.clone()];
        libs.extend(std::env::split_paths(&ld));
        // The tests that compare with the virtualenv's sacreBLEU and torch must run, not skip.
        cmd.env("VIRTUAL_ENV", &self.dir)
            .env("S2S_VENV", &self.dir)
            .env("S2S_REQUIRE_SACREBLEU", "1")
            .env("S2S_REQUIRE_TORCH", "1")
            .env("PATH", std::env::join_paths(paths).expect("valid PATH"))
            .env("LIBTORCH_USE_PYTORCH", "1")
            .env(
                "LD_LIBRARY_PATH",
                std::env::join_paths(libs).expect("valid LD_LIBRARY_PATH"),
            );
    }
}

/// Asks the virtualenv's python for torch's version and library folder.
fn probe_venv(dir: &Path) -> Option<Venv> {
    let out = Command::new(dir.join("bin/python"))
        .args([
            "-c",
            "import os, torch, sacrebleu, safetensors, tokenizers; print(torch.__version__); \
             print(os.path.join(os.path.dirname(torch.__file__), 'lib')); \
             print(sacrebleu.__version__); print(safetensors.__version__); \
             print(tokenizers.__version__)",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let version = lines.next()?;
    let lib = lines.next()?;
    let sacrebleu = lines.next()?;
    let safetensors = lines.next()?;
    let tokenizers = lines.next()?;
    let complete = out.status.success()
        && version.split('+').next() == Some(TORCH_VERSION)
        && sacrebleu == SACREBLEU_VERSION
        && safetensors == SAFETENSORS_VERSION
        && tokenizers == TOKENIZERS_VERSION;
    complete.then(|| Venv {
        dir: dir.to_path_buf(),
        torch_lib: PathBuf::from(lib),
    })
}

/// Returns the project's virtualenv, creating it (or completing it) when needed.
fn venv() -> Result<Venv> {
    let dir = venv_dir();
    if let Some(v) = probe_venv(&dir) {
        eprintln!("virtualenv {} has torch {TORCH_VERSION}", dir.display());
        return Ok(v);
    }
    if !dir.join("bin/python").exists() {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        let mut create = Command::new(&python);
        create.args(["-m", "venv"]).arg(&dir);
        run(create).with_context(|| format!("creating the virtualenv with {python}"))?;
    }
    let mut pip = Command::new(dir.join("bin/python"));
    // No pip cache: it would keep a second copy of torch's ~3.5 GB of wheels on disk, of no
    // use to a venv that is made once (a CI run on a small disk ran out of space with it).
    pip.args(["-m", "pip", "install", "--quiet", "--no-cache-dir"])
        .args(VENV_PACKAGES);
    eprintln!(
        "installing {} into {} (torch brings about 4 GB of CUDA libraries; the venv takes \
         about 7 GB, and the install needs about 4 GB more while it runs)",
        VENV_PACKAGES.join(" "),
        dir.display()
    );
    run(pip).with_context(|| {
        format!(
            "installing torch into {}: pip failed (\"No space left on device\" means the disk \
             needs about 11 GB free for the install; set S2S_VENV to a venv elsewhere)",
            dir.display()
        )
    })?;
    probe_venv(&dir).with_context(|| {
        format!(
            "{} still has no working torch {TORCH_VERSION} after pip install",
            dir.display()
        )
    })
}

/// Cargo arguments that compile the chosen backends into `crates` (each forwards its `flex`,
/// `tch` and `wgpu` features to s2s-tensor).
fn backend_features(backends: &[String], crates: &[&str]) -> Result<Vec<String>> {
    let mut features = Vec::new();
    for b in backends {
        match b.as_str() {
            "flex" | "tch" | "wgpu" => {
                for krate in crates {
                    features.push(format!("{krate}/{b}"));
                }
            }
            other => bail!("unknown backend {other:?} (known: flex, tch, wgpu)"),
        }
    }
    Ok(vec!["--features".into(), features.join(",")])
}

/// Checks that a Vulkan driver is installed before the wgpu tests need one.
fn check_vulkan() -> Result<()> {
    let icds = ["/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d"];
    let found = icds.iter().any(|d| {
        std::fs::read_dir(d)
            .map(|mut e| e.next().is_some())
            .unwrap_or(false)
    });
    if !found {
        bail!(
            "the wgpu backend needs a Vulkan driver and none is installed (no ICD file in {}); \
             on Debian without a GPU: apt-get install mesa-vulkan-drivers libvulkan1 (llvmpipe), \
             or leave wgpu out: cargo xtask test --backends flex,tch",
            icds.join(" or ")
        );
    }
    Ok(())
}

struct TestOptions {
    backends: Vec<String>,
    lint: bool,
    /// Extra arguments for `cargo test --workspace`.
    cargo_args: Vec<String>,
}

fn parse_test(args: &[String]) -> Result<TestOptions> {
    let mut o = TestOptions {
        backends: ["flex", "tch", "wgpu"].map(String::from).to_vec(),
        lint: true,
        cargo_args: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--backends" => {
                let list = option_value(&mut it, a)?;
                o.backends = list.split(',').map(|s| s.trim().to_string()).collect();
            }
            "--no-lint" => o.lint = false,
            "--" => o.cargo_args = it.by_ref().cloned().collect(),
            other => bail!("unknown option {other:?}\n\n{USAGE}"),
        }
    }
    if !o.backends.iter().any(|b| b == "flex") {
        // The default backend is used by the flex-only tests and the examples.
        o.backends.insert(0, "flex".into());
    }
    Ok(o)
}

/// A cargo command with the virtualenv's environment when tch is compiled in.
fn cargo_with(venv: Option<&Venv>) -> Command {
    let mut c = cargo();
    if let Some(v) = venv {
        v.apply(&mut c);
    }
    c
}

fn test(args: &[String]) -> Result<()> {
    let o = parse_test(args)?;
    let backends = &o.backends;
    let venv = if backends.iter().any(|b| b == "tch") {
        Some(venv()?)
    } else {
        None
    };
    if backends.iter().any(|b| b == "wgpu") {
        check_vulkan()?;
    }
    let mut features = backend_features(backends, &["s2s-tensor", "s2s-cli", "s2s-benches"])?;
    // Data-parallel training (`s2s train --nodes`, burn-collective) is tested too.
    features[1].push_str(",s2s-cli/distributed");
    if o.lint {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        run(fmt)?;
        patches::check(patches::Offline::Warn)?;
    }
    // Clippy lints the workspace's crates while they compile for the tests (clippy-driver as
    // the workspace's rustc wrapper, which is what `cargo clippy` does for a check build):
    // one compilation of everything instead of a check build of every dependency and of the
    // workspace, then the real one. Both commands below use the same wrapper, so the test
    // run finds the build fresh.
    let lint = if o.lint { Some(clippy_driver()?) } else { None };
    let with_lint = |mut c: Command| {
        if let Some(driver) = &lint {
            c.env("RUSTC_WORKSPACE_WRAPPER", driver).env(
                "CLIPPY_ARGS",
                "-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__",
            );
        }
        c
    };
    // Built first, then run: the log times compiling and testing apart. Without target
    // selections, every target is built (and linted), benches and examples included.
    let selected: Vec<&String> = o.cargo_args.iter().take_while(|a| *a != "--").collect();
    let mut build = with_lint(cargo_with(venv.as_ref()));
    build
        .args(["test", "--workspace", "--profile", "ci", "--no-run"])
        .args(&features)
        .args(&selected);
    if selected.is_empty() {
        build.arg("--all-targets");
    }
    run(build)?;
    let mut tests = with_lint(cargo_with(venv.as_ref()));
    tests
        .args(["test", "--workspace", "--profile", "ci"])
        .args(&features)
        .args(&o.cargo_args);
    run(tests)
}

/// Clippy's rustc driver, next to the `cargo` that runs xtask (or on `PATH`).
fn clippy_driver() -> Result<PathBuf> {
    let name = format!("clippy-driver{}", std::env::consts::EXE_SUFFIX);
    if let Some(cargo) = std::env::var_os("CARGO") {
        let beside = Path::new(&cargo).with_file_name(&name);
        if beside.is_file() {
            return Ok(beside);
        }
    }
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(&name))
        .find(|p| p.is_file());
    found.context("clippy-driver not found: install clippy (rustup component add clippy)")
}

struct BenchOptions {
    backends: Vec<String>,
    cells: Vec<String>,
    threads: usize,
    tch_device: String,
    wgpu_device: String,
    torch_device: String,
    /// Trained checkpoints (`--model`, repeatable); each cell decodes with the first of them
    /// that has that cell.
    models: Vec<PathBuf>,
    /// Whether `models` came from the command line rather than the defaults.
    models_given: bool,
    rounds: usize,
    phases: bool,
    /// Workers of the s2s sides (default: `threads` on a CPU device, 1 on a GPU).
    workers: Option<usize>,
}

fn parse_bench(args: &[String]) -> Result<BenchOptions> {
    let mut o = BenchOptions {
        backends: ["flex", "tch", "wgpu"].map(String::from).to_vec(),
        cells: vec!["gru".into(), "lstm".into()],
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        tch_device: "cpu".into(),
        wgpu_device: "default".into(),
        torch_device: "cpu".into(),
        models: ["runs/g2p", "runs/g2p-lstm"]
            .map(|m| project_root().join(m))
            .to_vec(),
        models_given: false,
        rounds: 3,
        phases: false,
        workers: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || option_value(&mut it, a);
        match a.as_str() {
            "--backends" => o.backends = value()?.split(',').map(String::from).collect(),
            "--cells" => o.cells = value()?.split(',').map(String::from).collect(),
            "--threads" => o.threads = value()?.parse().context("--threads takes a number")?,
            "--tch-device" => o.tch_device = value()?,
            "--wgpu-device" => o.wgpu_device = value()?,
            "--torch-device" => o.torch_device = value()?,
            "--model" => {
                if !o.models_given {
                    o.models.clear();
                    o.models_given = true;
                }
                o.models.push(PathBuf::from(value()?));
            }
            "--phases" => o.phases = true,
            "--workers" => {
                let n: usize = value()?.parse().context("--workers takes a number")?;
                if n == 0 {
                    bail!("--workers must be at least 1");
                }
                o.workers = Some(n);
            }
            "--rounds" => {
                o.rounds = value()?.parse().context("--rounds takes a number")?;
                if o.rounds == 0 {
                    bail!("--rounds must be at least 1");
                }
            }
            other => bail!("unknown bench option {other:?}\n\n{USAGE}"),
        }
    }
    Ok(o)
}

/// The first of `models` (checkpoint folders) whose `config.json` has recurrent cell `cell`;
/// folders that do not exist are passed over, unreadable configurations are errors.
fn trained_model<'a>(models: &'a [PathBuf], cell: &str) -> Result<Option<&'a PathBuf>> {
    for dir in models {
        // A training run folder keeps its best model in best/.
        let model = if dir.join("best/config.json").exists() {
            dir.join("best")
        } else {
            dir.clone()
        };
        let path = model.join("config.json");
        if !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON checkpoint configuration", path.display()))?;
        let found = config["model"]["cell"]
            .as_str()
            .with_context(|| format!("{}: no model.cell", path.display()))?;
        if found == cell {
            return Ok(Some(dir));
        }
    }
    Ok(None)
}

/// Runs `cmd`, echoing it, and parses the last JSON line of its stdout.
fn json_line(mut cmd: Command) -> Result<serde_json::Value> {
    cmd.stderr(Stdio::inherit()).stdout(Stdio::piped());
    eprintln!("$ {cmd:?}");
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed with {}", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| format!("{cmd:?} printed no JSON line"))?;
    serde_json::from_str(line).with_context(|| format!("parsing {line:?}"))
}

fn bench(args: &[String]) -> Result<()> {
    let o = parse_bench(args)?;
    let venv = venv()?;
    let features = backend_features(&o.backends, &["s2s-benches"])?;
    let mut build = cargo();
    venv.apply(&mut build);
    build
        .args(["build", "--release", "-p", "s2s-benches"])
        .args(&features);
    run(build)?;
    let bin = project_root().join("target/release/s2s-bench");
    let out_root = project_root().join("target/bench");
    let mut rows = Vec::new();
    for cell in &o.cells {
        let dir = out_root.join(cell);
        let mut export = Command::new(&bin);
        venv.apply(&mut export);
        export.args(["export", "--cell", cell, "--out"]).arg(&dir);
        match trained_model(&o.models, cell)? {
            Some(model) => {
                export.arg("--model").arg(model);
            }
            None => eprintln!(
                "warning: no trained {cell} model among {:?}: decoding runs on an untrained \
                 model, whose outputs run to the length limit (the protocol asks for a trained \
                 one: `cargo xtask train --out runs/g2p-{cell} -- --cell {cell}`)",
                o.models
            ),
        }
        run(export)?;
        // Every round runs every side once, so that a slow spell of a shared machine hits
        // all sides alike; each figure is then the median over the rounds.
        let sides = o.backends.len() + 1;
        let mut runs: Vec<Vec<serde_json::Value>> = vec![Vec::new(); sides];
        for round in 1..=o.rounds {
            eprintln!("{cell}: round {round} of {}", o.rounds);
            let mut py = Command::new(venv.python());
            py.arg(project_root().join("benches/pytorch_g2p.py"))
                .arg("--dir")
                .arg(&dir)
                .args(["--threads", &o.threads.to_string()])
                .args(["--device", &o.torch_device]);
            if o.phases {
                py.arg("--phases");
            }
            runs[0].push(json_line(py)?);
            for (i, backend) in o.backends.iter().enumerate() {
                let device = match backend.as_str() {
                    "tch" => o.tch_device.as_str(),
                    "wgpu" => o.wgpu_device.as_str(),
                    _ => "cpu",
                };
                let on_cpu = backend == "flex" || (backend == "tch" && device == "cpu");
                let workers = o.workers.unwrap_or(if on_cpu { o.threads } else { 1 });
                let mut r = Command::new(&bin);
                venv.apply(&mut r);
                r.args(["run", "--backend", backend, "--device", device])
                    .arg("--model")
                    .arg(dir.join("checkpoint"))
                    .args(["--threads", &o.threads.to_string()])
                    .args(["--workers", &workers.to_string()]);
                if o.phases {
                    r.arg("--phases");
                }
                runs[i + 1].push(json_line(r)?);
            }
        }
        let mut medians = runs.iter().map(|r| median_figures(r));
        let torch = medians.next().expect("the PyTorch side ran");
        for backend in medians {
            rows.push((backend, torch.clone()));
        }
        rows.push((torch.clone(), torch));
    }
    std::fs::create_dir_all(&out_root)?;
    let mut table = bench_table(&rows);
    if o.phases {
        table.push('\n');
        table.push_str(&phases_table(&rows));
        table.push('\n');
        table.push_str(&ceiling_table(&rows));
    }
    let raw: Vec<&serde_json::Value> = rows.iter().map(|(r, _)| r).collect();
    std::fs::write(
        out_root.join("results.json"),
        serde_json::to_string_pretty(&raw)?,
    )?;
    std::fs::write(out_root.join("table.md"), &table)?;
    println!("{}; median of {} rounds", machine_line(o.threads), o.rounds);
    println!("{table}");
    println!(
        "(raw figures: {}; table: {})",
        out_root.join("results.json").display(),
        out_root.join("table.md").display()
    );
    Ok(())
}

/// One side's figures over several rounds: the first run's fields, with every throughput
/// (`*_s`), time (`*_ms`) and share (`*_share`) replaced by its median and the peak memory by
/// its maximum; `rounds` and the raw throughputs (`*_s_rounds`) are kept beside them.
fn median_figures(runs: &[serde_json::Value]) -> serde_json::Value {
    let mut out = runs[0].clone();
    let Some(obj) = out.as_object_mut() else {
        return out;
    };
    let keys: Vec<String> = obj.keys().cloned().collect();
    for key in keys {
        let mut values: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.get(&key).and_then(|v| v.as_f64()))
            .collect();
        if values.len() != runs.len() {
            continue;
        }
        let throughput = key.ends_with("_s");
        if throughput || key.ends_with("_ms") || key.ends_with("_share") {
            if throughput {
                obj.insert(format!("{key}_rounds"), serde_json::json!(values.clone()));
            }
            values.sort_by(f64::total_cmp);
            let n = values.len();
            let median = if n % 2 == 1 {
                values[n / 2]
            } else {
                (values[n / 2 - 1] + values[n / 2]) / 2.0
            };
            obj.insert(key, serde_json::json!(median));
        } else if key == "peak_rss_mib" {
            let max = values.into_iter().fold(f64::MIN, f64::max);
            obj.insert(key, serde_json::json!(max));
        }
    }
    obj.insert("rounds".into(), serde_json::json!(runs.len()));
    out
}

fn machine_line(threads: usize) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(project_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "machine: {cpu}, {} cores, {threads} threads per side; commit {commit}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    )
}

/// A numeric figure of a side's results, if it has one.
fn num(v: &serde_json::Value, key: &str) -> Option<f64> {
    v.get(key).and_then(|x| x.as_f64())
}

/// The Markdown table of the benchmark: one row per side and cell, each figure with its
/// ratio to PyTorch's.
fn bench_table(rows: &[(serde_json::Value, serde_json::Value)]) -> String {
    let with_ratio = |r: &serde_json::Value, t: &serde_json::Value, k: &str, tk: &str| match (
        num(r, k),
        num(t, tk),
    ) {
        (Some(a), Some(b)) if r["side"] != "pytorch" => format!("{a:.0} ({:.2}x)", a / b),
        (Some(a), _) => format!("{a:.0}"),
        _ => "-".into(),
    };
    let mut s = String::from(
        "| side | device | cell | train tok/s (vs PyTorch) | greedy words/s (vs PyTorch) | \
         beam-5 words/s | beam-5 cost vs greedy | peak RSS MiB |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (r, t) in rows {
        let is_torch = r["side"] == "pytorch";
        let beam = if is_torch {
            num(r, "beam5_loop_words_s")
                .map(|b| format!("{b:.1} (per-sentence loop)"))
                .unwrap_or_else(|| "-".into())
        } else {
            match (num(r, "beam5_words_s"), num(t, "beam5_loop_words_s")) {
                (Some(b), Some(l)) => format!("{b:.0} ({:.0}x the PyTorch loop)", b / l),
                (Some(b), None) => format!("{b:.0}"),
                _ => "-".into(),
            }
        };
        let cost = match (num(r, "greedy_words_s"), num(r, "beam5_words_s")) {
            (Some(g), Some(b)) => format!("{:.2}x", g / b),
            _ => "-".into(),
        };
        let device = r["device"].as_str().unwrap_or("?");
        let device = match num(r, "workers") {
            Some(w) if w > 1.0 => format!("{device}, {w} workers"),
            _ => device.to_string(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["side"].as_str().unwrap_or("?"),
            device,
            r["cell"].as_str().unwrap_or("?"),
            with_ratio(r, t, "train_tok_s", "train_tok_s"),
            with_ratio(r, t, "greedy_words_s", "greedy_words_s"),
            beam,
            cost,
            num(r, "peak_rss_mib")
                .map(|m| format!("{m:.0}"))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    s
}

/// The phases of a training step that `--phases` times on every side.
const PHASES: [&str; 4] = ["forward", "backward", "clip", "optimizer"];

/// The Markdown table of `--phases`: milliseconds per phase of a training step on each side
/// (with the ratio of PyTorch's time to the side's for every phase and the total), and
/// PyTorch's share of time in matrix products.
fn phases_table(rows: &[(serde_json::Value, serde_json::Value)]) -> String {
    let ms = |v: &serde_json::Value, phase: &str| num(v, &format!("phase_{phase}_ms"));
    let total = |v: &serde_json::Value| PHASES.iter().map(|p| ms(v, p)).sum::<Option<f64>>();
    let cell = |r: &serde_json::Value, ours: Option<f64>, theirs| match (ours, theirs) {
        (Some(a), Some(b)) if r["side"] != "pytorch" && a > 0.0 => {
            format!("{a:.1} ({:.2}x)", b / a)
        }
        (Some(a), _) => format!("{a:.1}"),
        _ => "-".into(),
    };
    let share = |v: &serde_json::Value, k: &str| {
        num(v, k)
            .map(|x| format!("{:.0}%", 100.0 * x))
            .unwrap_or_else(|| "-".into())
    };
    let mut s = String::from(
        "Training step phases, ms (in brackets: PyTorch's time / this side's), and the share of \
         PyTorch's time in matrix products (profiler, CPU):\n\n\
         | side | cell | forward | backward | clip | optimizer | total | GEMM share: train / greedy |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for (r, t) in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r["side"].as_str().unwrap_or("?"),
            r["cell"].as_str().unwrap_or("?"),
            cell(r, ms(r, "forward"), ms(t, "forward")),
            cell(r, ms(r, "backward"), ms(t, "backward")),
            cell(r, ms(r, "clip"), ms(t, "clip")),
            cell(r, ms(r, "optimizer"), ms(t, "optimizer")),
            cell(r, total(r), total(t)),
            if r["side"] == "pytorch" {
                format!(
                    "{} / {}",
                    share(r, "train_gemm_share"),
                    share(r, "greedy_gemm_share")
                )
            } else {
                "-".into()
            },
        ));
    }
    s
}

/// The Markdown table of `--phases` that bounds decoding by matrix products: each side's
/// GEMM work per word (counted by `s2s-bench`), the words/s it would reach if nothing but
/// those products ran, at the best `torch.mm` rate PyTorch measured on this machine, next to
/// what it measured and to 50x PyTorch's per-sentence beam loop.
fn ceiling_table(rows: &[(serde_json::Value, serde_json::Value)]) -> String {
    let mut s = String::from(
        "Decoding bounded by matrix products (GEMM MFLOP per word, and the words/s at the \
         best torch.mm rate measured here if nothing else ran):\n\n\
         | side | cell | GEMM rate GFLOP/s | greedy: MFLOP/word, ceiling, measured | \
         beam-5: MFLOP/word, ceiling, measured | 50x the PyTorch loop |\n\
         |---|---|---|---|---|---|\n",
    );
    for (r, t) in rows.iter().filter(|(r, _)| r["side"] != "pytorch") {
        let rate = num(t, "gemm_gflops");
        let cells = |mflop: &str, measured: &str| match (num(r, mflop), rate) {
            (Some(w), Some(g)) if w > 0.0 => format!(
                "{w:.1}, {:.0}, {:.0}",
                g * 1e3 / w,
                num(r, measured).unwrap_or(f64::NAN)
            ),
            _ => "-".into(),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r["side"].as_str().unwrap_or("?"),
            r["cell"].as_str().unwrap_or("?"),
            rate.map(|g| format!("{g:.0}"))
                .unwrap_or_else(|| "-".into()),
            cells("greedy_gemm_mflop_per_word", "greedy_words_s"),
            cells("beam5_gemm_mflop_per_word", "beam5_words_s"),
            num(t, "beam5_loop_words_s")
                .map(|l| format!("{:.0}", 50.0 * l))
                .unwrap_or_else(|| "-".into()),
        ));
    }
    s
}

struct TrainOptions {
    task: String,
    /// `recipes/NAME.json`; `None` for a task without a recipe (`tsv`).
    recipe: Option<String>,
    epochs: Option<String>,
    out: PathBuf,
    time_limit: Option<f64>,
    resume: bool,
    overwrite: bool,
    backend: String,
    device: String,
    /// `--full FILE`: a full Tatoeba file instead of the shipped tutorial subset.
    full: Option<PathBuf>,
    extra: Vec<String>,
}

fn parse_train(args: &[String]) -> Result<TrainOptions> {
    let mut o = TrainOptions {
        task: "g2p".into(),
        recipe: None,
        // The recipe's (recipes/*.json) unless given.
        epochs: None,
        out: PathBuf::from("runs/g2p"),
        time_limit: None,
        resume: false,
        overwrite: false,
        backend: "flex".into(),
        device: "default".into(),
        full: None,
        extra: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || option_value(&mut it, a);
        match a.as_str() {
            "--task" => o.task = value()?,
            "--recipe" => o.recipe = Some(value()?),
            "--epochs" => o.epochs = Some(value()?),
            "--out" => o.out = PathBuf::from(value()?),
            "--time-limit" => {
                o.time_limit = Some(value()?.parse().context("--time-limit takes seconds")?)
            }
            "--resume" => o.resume = true,
            "--overwrite" => o.overwrite = true,
            "--backend" => o.backend = value()?,
            "--device" => o.device = value()?,
            "--full" => o.full = Some(PathBuf::from(value()?)),
            "--" => {
                o.extra = it.cloned().collect();
                break;
            }
            other => bail!("unknown train option {other:?}\n\n{USAGE}"),
        }
    }
    match &o.recipe {
        Some(name) => {
            // The recipe names the task.
            let recipe = recipe_path(name);
            let text = std::fs::read_to_string(&recipe)
                .with_context(|| format!("--recipe {name}: cannot read {}", recipe.display()))?;
            let settings: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("{}: not JSON", recipe.display()))?;
            let task = settings["task"]
                .as_str()
                .with_context(|| format!("{}: no \"task\"", recipe.display()))?;
            o.task = if name == "eng-fra" {
                name.clone()
            } else {
                task.to_string()
            };
        }
        None if recipe_path(&o.task).is_file() => o.recipe = Some(o.task.clone()),
        None => {}
    }
    if o.out == Path::new("runs/g2p") {
        o.out = PathBuf::from(format!("runs/{}", o.recipe.as_deref().unwrap_or(&o.task)));
    }
    if o.resume && o.overwrite {
        bail!("--resume and --overwrite exclude each other");
    }
    Ok(o)
}

/// The `s2s train` arguments that start or resume the run: `--resume OUT` (the run's own
/// settings), or the recipe `recipes/NAME.json`, `--out OUT` and `--overwrite` when asked;
/// then `--epochs` and `--time-limit` when given.
fn run_args(o: &TrainOptions, recipe: &str, out: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["train".into()];
    if o.resume {
        args.extend(["--resume".into(), out.into()]);
    } else {
        args.extend([
            "--config".into(),
            recipe_path(recipe).into(),
            "--out".into(),
            out.into(),
        ]);
        if o.overwrite {
            args.push("--overwrite".into());
        }
    }
    if let Some(epochs) = &o.epochs {
        args.extend(["--epochs".into(), epochs.into()]);
    }
    if let Some(t) = o.time_limit {
        args.extend(["--time-limit".into(), t.to_string().into()]);
    }
    args
}

/// The number of lines of a text file (0 when it cannot be read).
fn data_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// `recipes/NAME.json`.
fn recipe_path(name: &str) -> PathBuf {
    project_root().join("recipes").join(format!("{name}.json"))
}

fn train(args: &[String]) -> Result<()> {
    let o = parse_train(args)?;
    if o.task == "eng-fra" {
        return train_eng_fra(&o);
    }
    let (s2s, venv) = build_s2s(&o.backend)?;
    let out = if o.out.is_absolute() {
        o.out.clone()
    } else {
        project_root().join(&o.out)
    };
    let started = std::time::Instant::now();
    let mut cmd = s2s_command(&s2s, venv.as_ref(), &o);
    // The recipe (recipes/NAME.json; the default, g2p, trains a step-based schedule whose
    // time limit only guards slower machines). A task without a recipe (tsv) takes its
    // settings from the command line. Later options (after `--`) override.
    match &o.recipe {
        Some(recipe) => {
            cmd.args(run_args(&o, recipe, &out));
        }
        None if o.resume => {
            cmd.args(run_args(&o, "", &out));
        }
        None => {
            cmd.args(["train", "--task", &o.task, "--out"]).arg(&out);
            if let Some(epochs) = &o.epochs {
                cmd.args(["--epochs", epochs]);
            }
            if let Some(t) = o.time_limit {
                cmd.args(["--time-limit", &t.to_string()]);
            }
            if o.overwrite {
                cmd.arg("--overwrite");
            }
        }
    }
    cmd.args(&o.extra);
    // Progress and epoch lines (stderr) go straight to the terminal; the test scores come
    // back on stdout.
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    eprintln!("$ {cmd:?}");
    let trained = cmd.output().context("running s2s train")?;
    if !trained.status.success() {
        bail!("s2s train failed with {}", trained.status);
    }
    let train_secs = started.elapsed().as_secs_f64();
    // `s2s train` prints the test scores as one JSON line when the task has a test split.
    let printed = String::from_utf8_lossy(&trained.stdout);
    let Some(line) = printed.lines().rev().find(|l| l.starts_with('{')) else {
        println!(
            "model saved to {} ({train_secs:.0}s); no test split to score",
            out.display()
        );
        return Ok(());
    };
    let mut report: serde_json::Value =
        serde_json::from_str(line).context("parsing s2s train output")?;
    let averaged = report.get("averaged").cloned();
    if o.task == "g2p" {
        // Sample words from the test split.
        let mut eval = s2s_command(&s2s, venv.as_ref(), &o);
        eval.args(["eval", "--model"])
            .arg(&out)
            .args(["--split", "test", "--json", "--samples", "10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        eprintln!("$ {eval:?}");
        let output = eval.output().context("running s2s eval")?;
        if !output.status.success() {
            bail!(
                "s2s eval failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        report = serde_json::from_slice(&output.stdout).context("parsing s2s eval output")?;
    }
    let scores = &report["scores"];
    let total = started.elapsed().as_secs_f64();
    println!(
        "== {}: test split, {} sequences ==",
        o.task, scores["count"]
    );
    println!(
        "WER: {:.2}%",
        100.0 * scores["wer"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "PER (token error rate): {:.2}%",
        100.0 * scores["ter"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "exact match: {:.2}%",
        100.0 * scores["exact_match"].as_f64().unwrap_or(f64::NAN)
    );
    if let Some(a) = averaged {
        println!(
            "averaged checkpoints (averaged/): WER {:.2}%, PER {:.2}%",
            100.0 * a["wer"].as_f64().unwrap_or(f64::NAN),
            100.0 * a["ter"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("time: {train_secs:.0}s training, {total:.0}s in all");
    print_samples(&report, "prediction");
    println!(
        "model: {} (try: echo hello | target/release/s2s decode --model {})",
        out.display(),
        out.display()
    );
    Ok(())
}

/// Builds `s2s` with the backend's feature and returns its path (and the virtualenv for tch).
fn build_s2s(backend: &str) -> Result<(PathBuf, Option<Venv>)> {
    let venv = if backend == "tch" {
        Some(venv()?)
    } else {
        None
    };
    let mut build = cargo_with(venv.as_ref());
    build
        .args(["build", "--release", "-p", "s2s-cli"])
        .args(backend_features(&[backend.to_string()], &["s2s-cli"])?);
    run(build)?;
    Ok((project_root().join("target/release/s2s"), venv))
}

/// An `s2s` command on the chosen backend and device (in the virtualenv for tch), run from
/// the workspace root.
fn s2s_command(s2s: &Path, venv: Option<&Venv>, o: &TrainOptions) -> Command {
    let mut c = Command::new(s2s);
    if let Some(v) = venv {
        v.apply(&mut c);
    }
    c.args(["--backend", &o.backend, "--device", &o.device])
        .current_dir(project_root());
    c
}

/// Prints the samples of an `s2s eval --json` report, `output` naming the predicted side.
fn print_samples(report: &serde_json::Value, output: &str) {
    println!("samples (source -> {output} | references):");
    for s in report["samples"].as_array().into_iter().flatten() {
        println!(
            "  {} -> {} | {}",
            s["source"].as_str().unwrap_or(""),
            s["prediction"].as_str().unwrap_or(""),
            s["references"]
        );
    }
}

/// English->French on Tatoeba: split the shipped tutorial subset (`data/eng-fra/`, or every
/// pair of the `--full` file), train with BPE on both sides, then score greedy, beam 5 and
/// beam 10 on the held-out test split with BLEU and chrF, per line and grouped.
fn train_eng_fra(o: &TrainOptions) -> Result<()> {
    let corpus = match &o.full {
        Some(path) => {
            let path = std::env::current_dir()
                .map(|d| d.join(path))
                .unwrap_or_else(|_| path.clone());
            if !path.is_file() {
                bail!(
                    "--full {}: not found (give the full Tatoeba English-French file, \
                     English<TAB>French per line)",
                    path.display()
                );
            }
            path
        }
        None => project_root().join("data/eng-fra/tutorial.tsv"),
    };
    let (s2s, venv) = build_s2s(&o.backend)?;
    let s2s_cmd = || s2s_command(&s2s, venv.as_ref(), o);
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            project_root().join(p)
        }
    };
    let out = abs(&o.out);
    let data = out.with_file_name(format!(
        "{}-data",
        out.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("eng-fra")
    ));
    let mut split = s2s_cmd();
    split
        .arg("split")
        .arg("--input")
        .arg(&corpus)
        .arg("--out")
        .arg(&data);
    run(split)?;
    let started = std::time::Instant::now();
    let mut train = s2s_cmd();
    // The recipe (recipes/eng-fra.json): BPE on both sides (small vocabularies suit the ~10k
    // tutorial pairs), the g2p-bench model sizes, Adam 2e-3 with warmup and a cosine decay.
    train.args(run_args(o, o.recipe.as_deref().unwrap_or("eng-fra"), &out));
    if !o.resume {
        train
            .arg("--train")
            .arg(data.join("train.tsv"))
            .arg("--valid")
            .arg(data.join("valid.tsv"));
        if o.full.is_some() {
            train.args(["--bpe-vocab", "8000", "--max-steps", "20000"]);
        }
    }
    train.args(&o.extra);
    run(train)?;
    let train_secs = started.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    let eval = |args: &[&str], references: &str| -> Result<serde_json::Value> {
        let mut eval = s2s_cmd();
        eval.args(["eval", "--json", "--samples", "5", "--model"])
            .arg(&out)
            .arg("--test")
            .arg(data.join("test.tsv"))
            .args(["--references", references])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        eprintln!("$ {eval:?}");
        let output = eval.output().context("running s2s eval")?;
        if !output.status.success() {
            bail!("s2s eval failed with {}", output.status);
        }
        serde_json::from_slice(&output.stdout).context("parsing s2s eval output")
    };
    for (name, args) in [
        ("greedy", vec!["--strategy", "greedy"]),
        ("beam 5", vec!["--strategy", "beam", "--beam-size", "5"]),
        ("beam 10", vec!["--strategy", "beam", "--beam-size", "10"]),
    ] {
        let per_line = eval(&args, "per-line")?;
        let grouped = eval(&args, "grouped")?;
        if name == "greedy" {
            print_samples(&per_line, "translation");
        }
        rows.push((name, per_line, grouped));
    }
    println!(
        "\n| decoding | BLEU per line | chrF per line | BLEU grouped | chrF grouped | sentences/s |\n|---|---|---|---|---|---|"
    );
    let score = |r: &serde_json::Value, m: &str| r[m]["score"].as_f64().unwrap_or(f64::NAN);
    for (name, r, g) in &rows {
        let count = r["scores"]["count"].as_f64().unwrap_or(f64::NAN);
        let secs = r["decode_seconds"].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            score(r, "bleu"),
            score(r, "chrf"),
            score(g, "bleu"),
            score(g, "chrf"),
            count / secs
        );
    }
    if let Some((_, r, g)) = rows.first() {
        println!(
            "\nper line: every test line against its own target ({} lines); grouped: one \
             output per distinct source ({}) against all of its targets.\nBLEU {} / {}; chrF {} / {}",
            data_lines(&data.join("test.tsv")),
            r["scores"]["count"],
            r["bleu"]["signature"].as_str().unwrap_or("?"),
            g["bleu"]["signature"].as_str().unwrap_or("?"),
            r["chrf"]["signature"].as_str().unwrap_or("?"),
            g["chrf"]["signature"].as_str().unwrap_or("?")
        );
    }
    println!(
        "training: {train_secs:.0}s; model in {} (try: echo \"I am tired.\" | target/release/s2s translate --model {})",
        out.display(),
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::median_figures;
    use serde_json::json;

    #[test]
    fn median_figures_take_medians_of_throughputs_and_the_peak_memory() {
        let runs = [
            json!({"side": "tch", "train_tok_s": 30.0, "greedy_words_s": 5.0, "peak_rss_mib": 10.0}),
            json!({"side": "tch", "train_tok_s": 10.0, "greedy_words_s": 7.0, "peak_rss_mib": 12.0}),
            json!({"side": "tch", "train_tok_s": 20.0, "greedy_words_s": 6.0, "peak_rss_mib": 11.0}),
        ];
        let m = median_figures(&runs);
        assert_eq!(m["side"], "tch");
        assert_eq!(m["train_tok_s"], 20.0);
        assert_eq!(m["greedy_words_s"], 6.0);
        assert_eq!(m["peak_rss_mib"], 12.0);
        assert_eq!(m["rounds"], 3);
        assert_eq!(m["train_tok_s_rounds"], json!([30.0, 10.0, 20.0]));
        let even = median_figures(&runs[..2]);
        assert_eq!(even["train_tok_s"], 20.0);
        let phases = [
            json!({"phase_forward_ms": 3.0, "train_gemm_share": 0.5}),
            json!({"phase_forward_ms": 1.0, "train_gemm_share": 0.7}),
            json!({"phase_forward_ms": 2.0, "train_gemm_share": 0.6}),
        ];
        let m = median_figures(&phases);
        assert_eq!(m["phase_forward_ms"], 2.0);
        assert_eq!(m["train_gemm_share"], 0.6);
    }
}
