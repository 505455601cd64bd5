//! `s2s serve`: a model behind HTTP, with dynamic batching (`s2s_infer::Batcher`).
//!
//! - `POST /v1/decode` `{"inputs": ["hello", ...], "strategy": "beam", "n_best": 3, ...}`
//!   (every option of `s2s decode`, under its JSON name: `s2s_infer::DecodeOptions`, plus
//!   `"attention": true` for the attention matrices) returns `{"results": [{"source_tokens",
//!   "unknown", "outputs": [{"text", "tokens", "score", "attention"?}]}]}`, one result per
//!   input, hypotheses best first.
//! - `GET /v1/model`: the model's settings, vocabulary sizes, default options and limits;
//!   `GET /health`; `GET /`: a page to try the model.
//! - Errors are `{"error": message}`: 400 for a body that is not the JSON above, an unknown
//!   option or one out of range (`beam_size` and `n_best` at most 64, `max_len` at most
//!   1,024); 413 for too many inputs, an input too long or a body over
//!   the limit; 503 with `Retry-After` when the queue is full.
//! - SIGTERM or Ctrl-C: the server stops accepting connections, answers the requests in
//!   flight, and exits with status 0.

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use clap::Args;
use s2s_infer::batcher::Reply;
use s2s_infer::{Batcher, BatcherConfig, DecodeOptions, SubmitError, Translation, Translator};
use s2s_tensor::S2sBackend;
use serde_json::{json, Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The page at `GET /`.
const PAGE: &str = include_str!("serve_page.html");

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Model folder (or training run folder: its best model); give it more than once to
    /// serve an ensemble.
    #[arg(long, required = true)]
    model: Vec<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port; the address is printed on stderr).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The longest a request waits for others to join its batch, in milliseconds. With 0 (the
    /// default) a batch is whatever queued while the previous one decoded, which measured
    /// best at every load (docs/serving.md).
    #[arg(long, default_value_t = 0)]
    max_wait_ms: u64,
    /// Inputs decoded together at most.
    #[arg(long, default_value_t = 256)]
    max_batch: usize,
    /// Requests queued or being decoded at most; more get 503.
    #[arg(long, default_value_t = 1024)]
    queue: usize,
    /// Inputs per request at most; more get 413.
    #[arg(long, default_value_t = 256)]
    max_inputs: usize,
    /// Characters per input at most; longer inputs get 413.
    #[arg(long, default_value_t = 1000)]
    max_input_chars: usize,
    /// Sentences per decoding batch (inputs are sorted by length into such batches).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Threads that decode batches side by side (default: one per CPU core on a CPU).
    #[arg(long)]
    pub(crate) workers: Option<usize>,
}

/// What a request may hold.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Limits {
    max_inputs: usize,
    max_input_chars: usize,
    max_body_bytes: usize,
    /// Largest `beam_size`, and `n_best` for sampling: the work and memory of a request grow
    /// with them.
    max_beam: usize,
    /// Largest `max_len`: decoding runs up to that many steps.
    max_output_len: usize,
}

/// An error answer.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message.into())
}

/// A request's inputs encoded: source ids and the tokens not in the vocabulary.
type Encoded = Vec<(Vec<u32>, Vec<String>)>;

/// The model behind the handlers, with its backend type erased.
trait Engine: Send + Sync {
    /// Encodes the inputs and queues them; returns where their hypotheses will arrive.
    fn submit(
        &self,
        inputs: &[String],
        options: DecodeOptions,
    ) -> Result<(Encoded, oneshot::Receiver<Reply>), ApiError>;
    /// The results of one request from its encoded inputs and hypotheses.
    fn results(&self, encoded: Encoded, reply: Reply) -> Vec<Translation>;
    /// `GET /v1/model`.
    fn info(&self) -> Value;
}

struct Service<B: S2sBackend> {
    translator: Arc<Translator<B>>,
    batcher: Batcher,
    limits: Limits,
    models: usize,
}

impl<B: S2sBackend> Engine for Service<B>
where
    Translator<B>: Send + Sync,
{
    fn submit(
        &self,
        inputs: &[String],
        options: DecodeOptions,
    ) -> Result<(Encoded, oneshot::Receiver<Reply>), ApiError> {
        let strategy = self
            .translator
            .strategy(&options)
            .map_err(|e| bad_request(e.to_string()))?;
        let encoded: Encoded = inputs.iter().map(|t| self.translator.encode(t)).collect();
        let sources = encoded.iter().map(|(ids, _)| ids.clone()).collect();
        let (sender, receiver) = oneshot::channel();
        // A client that went away no longer listens; that is not an error here.
        let reply = Box::new(move |r| {
            let _ = sender.send(r);
        });
        match self.batcher.submit_with(sources, options, strategy, reply) {
            Ok(()) => Ok((encoded, receiver)),
            Err(SubmitError::Full) => Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is busy (its queue is full); retry shortly".into(),
            )),
            Err(SubmitError::Stopped) => Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is stopping".into(),
            )),
        }
    }

    fn results(&self, encoded: Encoded, reply: Reply) -> Vec<Translation> {
        self.translator.translations(encoded, reply)
    }

    fn info(&self) -> Value {
        let checkpoint = &self.translator.checkpoint;
        json!({
            "task": checkpoint.meta.task,
            "model": checkpoint.meta.model,
            "models": self.models,
            "source_vocab": checkpoint.codec.source_vocab.len(),
            "target_vocab": checkpoint.codec.target_vocab.len(),
            "source_tokenizer": checkpoint.codec.source_tokenizer.describe(),
            "target_tokenizer": checkpoint.codec.target_tokenizer.describe(),
            "max_decode_len": checkpoint.meta.max_decode_len,
            "defaults": DecodeOptions::default(),
            "limits": self.limits,
        })
    }
}

type AppState = Arc<dyn Engine>;

/// The inputs and options of a `POST /v1/decode` body.
fn parse_request(body: &[u8], limits: &Limits) -> Result<(Vec<String>, DecodeOptions), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("the body is not JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(bad_request(
            "the body must be a JSON object: {\"inputs\": [...], options...}",
        ));
    };
    let inputs = match fields.remove("inputs") {
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s),
                other => Err(bad_request(format!("inputs[{i}] is {other}, not a string"))),
            })
            .collect::<Result<Vec<String>, ApiError>>()?,
        Some(_) => return Err(bad_request("\"inputs\" must be an array of strings")),
        None => return Err(bad_request("\"inputs\" is missing")),
    };
    let options: DecodeOptions = serde_json::from_value(Value::Object(Map::from_iter(fields)))
        .map_err(|e| bad_request(format!("options: {e}")))?;
    for (name, value, limit) in [
        ("beam_size", options.beam_size, limits.max_beam),
        ("n_best", options.n_best, limits.max_beam),
        (
            "max_len",
            options.max_len.unwrap_or(0),
            limits.max_output_len,
        ),
    ] {
        if value > limit {
            return Err(bad_request(format!(
                "`{name}` {value} is over this server's limit of {limit}"
            )));
        }
    }
    if inputs.len() > limits.max_inputs {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} inputs; at most {} per request",
                inputs.len(),
                limits.max_inputs
            ),
        ));
    }
    if let Some((i, s)) = inputs
        .iter()
        .enumerate()
        .find(|(_, s)| s.chars().count() > limits.max_input_chars)
    {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "inputs[{i}] has {} characters; at most {}",
                s.chars().count(),
                limits.max_input_chars
            ),
        ));
    }
    Ok((inputs, options))
}

async fn decode(
    State((engine, limits)): State<(AppState, Limits)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (inputs, options) = parse_request(&body, &limits)?;
    let (encoded, receiver) = engine.submit(&inputs, options)?;
    let reply = receiver.await.map_err(|_| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "decoding failed; see the server's log".into(),
        )
    })?;
    let results = engine.results(encoded, reply);
    Ok(axum::Json(json!({ "results": results })).into_response())
}

async fn model(State((engine, _)): State<(AppState, Limits)>) -> Response {
    axum::Json(engine.info()).into_response()
}

async fn health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such endpoint: POST /v1/decode, GET /v1/model, GET /health, GET /".into(),
    )
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("stopping: answering the requests in flight");
}

/// Runs the server until SIGTERM or Ctrl-C.
pub fn run<B: S2sBackend>(args: ServeArgs, device: &B::Device) -> Result<()>
where
    Translator<B>: Send + Sync,
{
    let mut translator = Translator::<B>::load(&args.model, device)?;
    translator.batch_size = args.batch_size.max(1);
    translator.workers = args.workers.unwrap_or(1).max(1);
    let translator = Arc::new(translator);
    let config = BatcherConfig {
        max_wait: Duration::from_millis(args.max_wait_ms),
        max_batch: args.max_batch.max(1),
        queue: args.queue.max(1),
    };
    let limits = Limits {
        max_inputs: args.max_inputs,
        max_input_chars: args.max_input_chars,
        // Room for max_inputs inputs of max_input_chars 4-byte characters, JSON-quoted.
        max_body_bytes: (args.max_inputs * (args.max_input_chars * 4 + 8)).max(64 * 1024)
            + 64 * 1024,
        max_beam: 64,
        max_output_len: 1024,
    };
    let service = Arc::new(Service {
        batcher: Batcher::start(translator.clone(), config),
        translator,
        limits,
        models: args.model.len(),
    });
    let engine: AppState = service.clone();
    let app = Router::new()
        .route("/", get(page))
        .route("/health", get(health))
        .route("/v1/model", get(model))
        .route("/v1/decode", post(decode))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .with_state((engine.clone(), limits));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the server's runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        eprintln!("listening on http://{address}");
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
            .context("serving")
    })?;
    // The last handle: the batcher answers what is queued and its thread ends.
    drop(engine);
    let stats = match Arc::try_unwrap(service) {
        Ok(service) => service.batcher.shutdown(),
        // A connection task still holds it (not expected after graceful shutdown).
        Err(service) => service.batcher.stats(),
    };
    eprintln!(
        "stopped; decoded {} inputs of {} requests in {} rounds ({:.1} inputs a round)",
        stats.inputs,
        stats.requests,
        stats.rounds,
        stats.inputs as f64 / stats.rounds.max(1) as f64
    );
    Ok(())
}
