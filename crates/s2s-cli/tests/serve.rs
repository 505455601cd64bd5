//! `s2s serve` from outside, as a client sees it: a small trained model served on 127.0.0.1,
//! requests over plain HTTP/1.1 (a minimal client on `TcpStream`, `Connection: close`).

mod common;

use common::{s2s, text, train_tiny_with};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A small model of the reverse task (a run folder).
fn train(dir: &Path) -> String {
    train_tiny_with(dir, &["--epochs", "2"])
}

/// A running `s2s serve` and its port.
struct Server {
    child: Child,
    port: u16,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Server {
    fn start(model: &str, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_s2s"))
            .args(["serve", "--model", model, "--port", "0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let mut server = Server {
            child,
            port: 0,
            stderr,
        };
        let mut line = String::new();
        while server.port == 0 {
            line.clear();
            assert!(
                server.stderr.read_line(&mut line).unwrap() > 0,
                "the server ended before listening"
            );
            if let Some(address) = line.trim().strip_prefix("listening on http://") {
                server.port = address.rsplit(':').next().unwrap().parse().unwrap();
            }
        }
        server
    }

    /// Sends one request; returns the status, the headers (lower-cased names) and the body.
    fn request(
        &self,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, Vec<(String, String)>, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let response = text(&response);
        let (head, body) = response.split_once("\r\n\r\n").expect("a full response");
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, body.to_string())
    }

    fn decode(&self, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let (status, _, body) = self.request("POST", "/v1/decode", &body.to_string());
        (status, serde_json::from_str(&body).expect("a JSON answer"))
    }

    /// SIGTERM, then the exit status and what it printed after listening.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        (self.child.wait().unwrap(), rest)
    }
}

impl Drop for Server {
    /// A server a failed test leaves is killed, not left running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `s2s decode`'s greedy outputs, or beam n-best lists with scores, of `words`.
fn offline(model: &str, words: &[&str], beam: bool) -> Vec<Vec<(String, f64)>> {
    let input: String = words.iter().map(|w| format!("{w}\n")).collect();
    let mut args = vec!["decode", "--model", model, "--scores"];
    if beam {
        args.extend(["--strategy", "beam", "--beam-size", "4", "--n-best", "3"]);
    }
    let out = s2s(&args, input.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .split("\n\n")
        .filter(|b| !b.is_empty())
        .map(|block| {
            block
                .lines()
                .map(|l| {
                    let (t, s) = l.rsplit_once('\t').unwrap();
                    (t.to_string(), s.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

/// 64 clients at once, each sending one to three words with greedy or beam options, get what
/// `s2s decode` gives for the same words: the same texts, scores equal to 1e-5 relative.
#[test]
fn concurrent_clients_get_what_decode_gives() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path());
    let words: Vec<String> = (0..40)
        .map(|i| {
            let letters = "abcdefghij";
            (0..1 + i % 9)
                .map(|k| letters.as_bytes()[(i * 7 + k * 3) % 10] as char)
                .collect()
        })
        .collect();
    let words_ref: Vec<&str> = words.iter().map(String::as_str).collect();
    let greedy = offline(&model, &words_ref, false);
    let beam = offline(&model, &words_ref, true);
    let server = Server::start(&model, &["--max-wait-ms", "10", "--max-batch", "32"]);
    let server = std::sync::Arc::new(server);
    let clients: Vec<_> = (0..64)
        .map(|c| {
            let server = server.clone();
            let words = words.clone();
            std::thread::spawn(move || {
                let picked: Vec<usize> = (0..1 + c % 3).map(|k| (c * 5 + k * 11) % 40).collect();
                let inputs: Vec<&str> = picked.iter().map(|&i| words[i].as_str()).collect();
                let beam = c % 2 == 1;
                let body = if beam {
                    serde_json::json!({"inputs": inputs, "strategy": "beam", "beam_size": 4, "n_best": 3})
                } else {
                    serde_json::json!({"inputs": inputs})
                };
                let (status, answer) = server.decode(&body);
                assert_eq!(status, 200, "{answer}");
                (picked, beam, answer)
            })
        })
        .collect();
    for client in clients {
        let (picked, is_beam, answer) = client.join().unwrap();
        let results = answer["results"].as_array().unwrap();
        assert_eq!(results.len(), picked.len());
        for (&i, result) in picked.iter().zip(results) {
            let expected = if is_beam { &beam[i] } else { &greedy[i] };
            let outputs = result["outputs"].as_array().unwrap();
            assert_eq!(outputs.len(), expected.len(), "{}", words[i]);
            for (o, (t, s)) in outputs.iter().zip(expected) {
                assert_eq!(o["text"].as_str().unwrap(), t, "{}", words[i]);
                let score = o["score"].as_f64().unwrap();
                assert!(
                    (score - s).abs() <= 1e-5 * (1.0 + s.abs()),
                    "{score} vs {s}"
                );
            }
        }
    }
    let server = std::sync::Arc::try_unwrap(server).ok().unwrap();
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// Every error a client can cause is a JSON answer with the right status, and the server
/// goes on serving; the informational endpoints answer.
#[test]
fn bad_requests_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path());
    let server = Server::start(&model, &["--max-inputs", "3", "--max-input-chars", "10"]);
    let cases = [
        ("nope", 400, "not JSON"),
        ("[1, 2]", 400, "JSON object"),
        (r#"{"strategy": "beam"}"#, 400, "\"inputs\" is missing"),
        (r#"{"inputs": "abc"}"#, 400, "array of strings"),
        (r#"{"inputs": ["abc", 7]}"#, 400, "inputs[1]"),
        (
            r#"{"inputs": ["abc"], "beam": 4}"#,
            400,
            "unknown field `beam`",
        ),
        (
            r#"{"inputs": ["abc"], "strategy": "best"}"#,
            400,
            "unknown variant `best`",
        ),
        (
            r#"{"inputs": ["abc"], "strategy": "beam", "beam_size": 2, "n_best": 3}"#,
            400,
            "`n_best` (3) cannot exceed `beam_size` (2)",
        ),
        (
            r#"{"inputs": ["abc"], "temperature": -1}"#,
            400,
            "`temperature`",
        ),
        (
            r#"{"inputs": ["a", "b", "c", "d"]}"#,
            413,
            "4 inputs; at most 3",
        ),
        (
            r#"{"inputs": ["abcdefghijk"]}"#,
            413,
            "inputs[0] has 11 characters",
        ),
    ];
    for (body, want, says) in cases {
        let (status, headers, answer) = server.request("POST", "/v1/decode", body);
        assert_eq!(status, want, "{body}: {answer}");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "content-type" && v.contains("json")),
            "{body}"
        );
        let error: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }
    // A body over the limit.
    let huge = format!(r#"{{"inputs": ["{}"]}}"#, "a".repeat(2 << 20));
    let (status, _, _) = server.request("POST", "/v1/decode", &huge);
    assert_eq!(status, 413);
    let (status, _, answer) = server.request("GET", "/nowhere", "");
    assert_eq!(status, 404, "{answer}");
    // Still serving; empty inputs and an empty list are fine.
    let (status, answer) = server.decode(&serde_json::json!({"inputs": ["", "abc"]}));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["results"].as_array().unwrap().len(), 2);
    let (status, answer) = server.decode(&serde_json::json!({"inputs": []}));
    assert_eq!(
        (status, answer["results"].as_array().unwrap().len()),
        (200, 0)
    );
    // Attention on request: one row per output token, and one for <eos>.
    let (_, answer) = server.decode(&serde_json::json!({"inputs": ["abc"], "attention": true}));
    let output = &answer["results"][0]["outputs"][0];
    let rows = output["attention"].as_array().unwrap();
    let tokens = output["tokens"].as_array().unwrap().len();
    assert!(rows.len() == tokens || rows.len() == tokens + 1, "{output}");
    assert!(rows.iter().all(|r| r.as_array().unwrap().len() == 3));

    let (status, _, health) = server.request("GET", "/health", "");
    assert_eq!((status, health.as_str()), (200, r#"{"status":"ok"}"#));
    let (status, _, info) = server.request("GET", "/v1/model", "");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(status, 200);
    assert_eq!(info["task"], "reverse");
    assert_eq!(info["defaults"]["strategy"], "greedy");
    assert_eq!(info["limits"]["max_inputs"], 3);
    let (status, headers, page) = server.request("GET", "/", "");
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "content-type" && v.contains("text/html")));
    assert!(page.contains("/v1/decode"));
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// A full queue answers 503 with Retry-After; SIGTERM lets the requests in flight finish
/// (each gets its 200) and the server exits with status 0.
#[test]
fn full_queue_and_graceful_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path());
    // One request queued at most, each gathering round waiting 400 ms for more.
    let server = Server::start(&model, &["--queue", "1", "--max-wait-ms", "400"]);
    let server = std::sync::Arc::new(server);
    let clients: Vec<_> = (0..12)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || {
                server.request("POST", "/v1/decode", r#"{"inputs": ["abc"]}"#)
            })
        })
        .collect();
    let answers: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let busy: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 503).collect();
    assert!(!busy.is_empty(), "no request was refused");
    assert!(answers.iter().any(|(s, _, _)| *s == 200));
    for (_, headers, body) in busy {
        assert!(headers.iter().any(|(k, v)| k == "retry-after" && v == "1"));
        assert!(body.contains("busy"), "{body}");
    }

    // Requests in flight when SIGTERM arrives are answered.
    let in_flight: Vec<_> = (0..1)
        .map(|_| {
            let server = server.clone();
            std::thread::spawn(move || {
                server.decode(&serde_json::json!({"inputs": ["abc", "cab"]}))
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let pid = server.child.id().to_string();
    let ok = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(ok.success());
    for request in in_flight {
        let (status, answer) = request.join().unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["results"].as_array().unwrap().len(), 2);
    }
    let mut server = std::sync::Arc::try_unwrap(server).ok().unwrap();
    let mut log = String::new();
    server.stderr.read_to_string(&mut log).unwrap();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("stopping") && log.contains("stopped"), "{log}");
}

/// Debian's chromium, if installed (`$CHROMIUM` names another); without it the browser test
/// says so and passes, unless `S2S_REQUIRE_CHROMIUM=1` (set by `.ci/run`, which installs it).
fn chromium() -> Option<String> {
    let candidates = std::env::var("CHROMIUM")
        .into_iter()
        .chain(["chromium", "chromium-browser", "google-chrome"].map(String::from));
    for c in candidates {
        let ok = Command::new(&c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(c);
        }
    }
    assert!(
        std::env::var("S2S_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
        "S2S_REQUIRE_CHROMIUM=1 but no chromium (apt-get install chromium)"
    );
    eprintln!("browser test skipped: no chromium (apt-get install chromium)");
    None
}

/// The contents of every `<td class="CLASS">` of `html`, in order.
fn cells(html: &str, class: &str) -> Vec<String> {
    let open = format!("<td class=\"{class}\">");
    html.split(&open)
        .skip(1)
        .map(|rest| rest.split("</td>").next().unwrap().to_string())
        .collect()
}

/// The page in a real browser (headless chromium): opened with inputs and options in its
/// address, it fills its form, decodes through the API and renders, for every input, the
/// n-best list that `s2s decode` gives (texts, and scores to the 4 decimals shown) and an
/// attention heatmap.
#[test]
fn the_page_renders_decode_outputs_in_a_browser() {
    let Some(browser) = chromium() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = train(dir.path());
    let words = ["abc", "cab", "abcabc", "jihg"];
    let expected = offline(&model, &words, true);
    let server = Server::start(&model, &[]);
    let url = format!(
        "http://127.0.0.1:{}/?inputs={}&strategy=beam&beam_size=4&n_best=3",
        server.port,
        words.join("%0A")
    );
    let profile = dir.path().join("profile");
    let out = Command::new(&browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=20000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(&url)
        .output()
        .unwrap();
    let dom = text(&out.stdout);
    assert!(
        dom.contains("data-state=\"done\""),
        "{dom}\n{}",
        text(&out.stderr)
    );
    let texts = cells(&dom, "text");
    let scores = cells(&dom, "score");
    let want_texts: Vec<String> = expected.iter().flatten().map(|(t, _)| t.clone()).collect();
    assert_eq!(texts, want_texts, "{dom}");
    // Scores shown to 4 decimals.
    assert_eq!(scores.len(), texts.len());
    for (shown, (_, s)) in scores.iter().zip(expected.iter().flatten()) {
        let shown: f64 = shown.parse().unwrap();
        assert!((shown - s).abs() <= 0.6e-4, "{shown} vs {s}");
    }
    assert_eq!(dom.matches("class=\"heat\"").count(), words.len(), "{dom}");
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}
