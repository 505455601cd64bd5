//! A load generator for `s2s serve`: N clients on 127.0.0.1, each on its own kept-alive
//! HTTP/1.1 connection, send one-word `POST /v1/decode` requests back to back for a number of
//! seconds (words taken in turn from a file); prints one JSON line with requests/s, words/s
//! and the latency percentiles. `scripts/serve-bench.sh` runs it against a server and
//! compares with offline `s2s decode` (docs/serving.md).
//!
//! ```sh
//! cargo run --release -p s2s-benches --example serve_load -- PORT CLIENTS SECONDS WORDS_FILE [BODY_OPTIONS_JSON]
//! ```

use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One client's kept-alive connection.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(port: u16) -> Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port)).context("connecting")?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        })
    }

    /// Sends one request and reads its whole response; returns the status.
    fn post(&mut self, body: &str) -> Result<u16> {
        write!(
            self.writer,
            "POST /v1/decode HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .context("no status line")?
            .parse()
            .context("a bad status")?;
        let mut length = 0usize;
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the server closed the connection");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((k, v)) = header.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse()?;
                }
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(status)
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: serve_load PORT CLIENTS SECONDS WORDS_FILE [OPTIONS_JSON]";
    if args.len() < 4 {
        bail!(usage);
    }
    let port: u16 = args[0].parse().context(usage)?;
    let clients: usize = args[1].parse().context(usage)?;
    let seconds: f64 = args[2].parse().context(usage)?;
    let words: Vec<String> = std::fs::read_to_string(&args[3])
        .with_context(|| format!("reading {}", args[3]))?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    if words.is_empty() {
        bail!("{}: no words", args[3]);
    }
    let options: serde_json::Map<String, serde_json::Value> = match args.get(4) {
        Some(json) => serde_json::from_str(json).context("OPTIONS_JSON")?,
        None => serde_json::Map::new(),
    };
    let words = Arc::new(words);
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (words, next, options) = (words.clone(), next.clone(), options.clone());
            std::thread::spawn(move || -> Result<(Vec<f64>, usize)> {
                let mut client = Client::connect(port)?;
                let mut latencies = Vec::new();
                let mut failed = 0;
                while Instant::now() < deadline {
                    let word = &words[next.fetch_add(1, Ordering::Relaxed) % words.len()];
                    let mut body = options.clone();
                    body.insert("inputs".into(), serde_json::json!([word]));
                    let body = serde_json::Value::Object(body).to_string();
                    let sent = Instant::now();
                    let status = client.post(&body)?;
                    if status == 200 {
                        latencies.push(sent.elapsed().as_secs_f64());
                    } else {
                        failed += 1;
                    }
                }
                Ok((latencies, failed))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for t in threads {
        let (l, f) = t.join().expect("a client thread")?;
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len().max(1));
        latencies.get(i - 1).copied().unwrap_or(f64::NAN) * 1000.0
    };
    let ok = latencies.len();
    println!(
        "{}",
        serde_json::json!({
            "clients": clients,
            "seconds": elapsed,
            "requests": ok,
            "failed": failed,
            "requests_per_second": ok as f64 / elapsed,
            "words_per_second": ok as f64 / elapsed,
            "p50_ms": pct(0.50),
            "p99_ms": pct(0.99),
            "mean_ms": latencies.iter().sum::<f64>() / ok.max(1) as f64 * 1000.0,
        })
    );
    Ok(())
}
