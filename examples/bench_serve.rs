//! `bench/serve.sh` (`make bench-serve`): a bounded load generator for `shardsage serve`.
//!
//! Against a running server (`--url`), with paper ids, features and references read from the
//! parts the server serves (`--data`), it measures on loopback with keep-alive connections:
//! - known-paper top-10 (the fast path) at 1 client: p50 / p99 latency over `--requests`;
//! - the same at `--clients` concurrent clients for `--seconds`: requests/s and latencies;
//! - new-paper top-10 (a stored paper's features and 10 of its references) at 1 client;
//! - recall@10 of the fast path against exhaustive scoring (`"exact": true`) over
//!   `--recall-queries` papers.
//!
//! Prints a table and writes `bench/results/<--out>.json` with the machine, date and commit.

#[path = "../bench/common.rs"]
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A keep-alive HTTP/1.1 connection.
struct Conn {
    host: String,
    reader: BufReader<TcpStream>,
}

impl Conn {
    fn open(host: &str) -> BenchResult<Conn> {
        let s = TcpStream::connect(host)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        Ok(Conn {
            host: host.to_string(),
            reader: BufReader::new(s),
        })
    }

    fn post(&mut self, path: &str, body: &str) -> BenchResult<(u16, String)> {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.send(&req)
    }

    fn get(&mut self, path: &str) -> BenchResult<(u16, String)> {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.send(&req)
    }

    /// Sends on the open connection; reopens it once when the server has closed it (an idle
    /// keep-alive connection is closed after the server's client timeout).
    fn send(&mut self, req: &str) -> BenchResult<(u16, String)> {
        match self.send_once(req) {
            Ok(r) => Ok(r),
            Err(_) => {
                *self = Conn::open(&self.host)?;
                self.send_once(req)
            }
        }
    }

    fn send_once(&mut self, req: &str) -> BenchResult<(u16, String)> {
        self.reader.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let mut len = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse()?;
                }
            }
        }
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8(body)?))
    }
}

const PREDICT: &str = "/v1/models/citations:predict";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn latencies(conn: &mut Conn, bodies: &[String], n: usize) -> BenchResult<Vec<f64>> {
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let (st, text) = conn.post(PREDICT, &bodies[i % bodies.len()])?;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        if st != 200 {
            return Err(format!("status {st}: {text}").into());
        }
    }
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

fn top_ids(text: &str) -> BenchResult<Vec<u64>> {
    let v: Value = serde_json::from_str(text)?;
    Ok(v["predictions"][0]["candidates"]
        .as_array()
        .ok_or("no candidates")?
        .iter()
        .filter_map(|c| c["paper"].as_u64())
        .collect())
}

fn main() -> BenchResult<()> {
    let url = arg("--url").unwrap_or_else(|| "127.0.0.1:8080".into());
    let host = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let data = arg("--data").ok_or("--data PARTS is required")?;
    let requests: usize = arg("--requests")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let clients: usize = arg("--clients").and_then(|v| v.parse().ok()).unwrap_or(32);
    let seconds: f64 = arg("--seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10.0);
    let recall_queries: usize = arg("--recall-queries")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let out = arg("--out");
    let label = arg("--label").unwrap_or_else(|| "serve".into());
    let ready_s: Option<f64> = arg("--ready-s").and_then(|v| v.parse().ok());
    let ready_rss_kib: Option<f64> = arg("--ready-rss-kib").and_then(|v| v.parse().ok());

    let g = shardsage::graph::loader::load_rank_parts(std::path::Path::new(&data), 0, 1)?;
    let n = g.num_local_nodes() as u64;
    // Papers spread over the id range, with at least one link (ids by the counter hash).
    let papers: Vec<u64> = (0..)
        .map(|i| shardsage::sample::rng::below(shardsage::sample::rng::hash(11, 0, 0, 0, i, 0), n))
        .filter(|&i| !g.neighbors(i).is_empty())
        .take(4096)
        .collect();
    let known: Vec<String> = papers
        .iter()
        .map(|&i| json!({"instances": [{"paper": g.orig_id[i as usize], "top_k": 10}]}).to_string())
        .collect();
    let new_papers: Vec<String> = papers
        .iter()
        .take(512)
        .map(|&i| {
            let refs: Vec<u64> = g
                .neighbors(i)
                .iter()
                .take(10)
                .map(|&v| g.orig_id[v as usize])
                .collect();
            json!({"instances": [{"features": g.feature_row(i), "references": refs, "top_k": 10}]})
                .to_string()
        })
        .collect();

    let mut conn = Conn::open(&host)?;
    // Warm-up.
    latencies(&mut conn, &known, 200)?;
    let one = latencies(&mut conn, &known, requests)?;
    // A server started from an embeddings file embeds no new papers (it says so with a 400).
    let serves_new = conn.post(PREDICT, &new_papers[0])?.0 == 200;
    let newp = if serves_new {
        latencies(&mut conn, &new_papers, requests.min(1000))?
    } else {
        Vec::new()
    };

    // Concurrent clients for a fixed time.
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let host = host.clone();
            let bodies: Vec<String> = known.iter().skip(c).step_by(clients).cloned().collect();
            std::thread::spawn(move || -> Result<Vec<f64>, String> {
                let mut conn = Conn::open(&host).map_err(|e| e.to_string())?;
                let mut lat = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let (st, text) = conn
                        .post(PREDICT, &bodies[i % bodies.len()])
                        .map_err(|e| e.to_string())?;
                    if st != 200 {
                        return Err(format!("status {st}: {text}"));
                    }
                    lat.push(t.elapsed().as_secs_f64() * 1e3);
                    i += 1;
                }
                Ok(lat)
            })
        })
        .collect();
    let t0 = Instant::now();
    let mut many = Vec::new();
    for h in handles {
        many.extend(h.join().map_err(|_| "client thread panicked")??);
    }
    let wall = t0.elapsed().as_secs_f64().max(seconds);
    let rps = many.len() as f64 / wall;
    many.sort_by(f64::total_cmp);

    // Recall of the fast path against exhaustive scoring.
    let mut hits = 0usize;
    let mut total = 0usize;
    for &i in papers.iter().take(recall_queries) {
        let p = g.orig_id[i as usize];
        let (_, fast) = conn.post(
            PREDICT,
            &json!({"instances": [{"paper": p, "top_k": 10}]}).to_string(),
        )?;
        let (_, exact) = conn.post(
            PREDICT,
            &json!({"instances": [{"paper": p, "top_k": 10, "exact": true}]}).to_string(),
        )?;
        let (f, e) = (top_ids(&fast)?, top_ids(&exact)?);
        hits += f.iter().filter(|x| e.contains(x)).count();
        total += e.len();
    }
    let recall = hits as f64 / total.max(1) as f64;

    // The tables' size, from the server's own gauge.
    let (_, metrics) = conn.get("/metrics")?;
    let tables_mib = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shardsage_resident_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|b| b / (1 << 20) as f64);
    let meta = run_meta();
    let mut report = format!("### {label}\n\n{}\n\n", meta_line(&meta));
    report.push_str(&format!(
        "{n} papers. Start-up to ready: {}; RSS at ready {} (served tables {}).\n\n",
        ready_s.map_or("not measured".into(), |s| format!("{s:.1} s")),
        ready_rss_kib.map_or("not measured".into(), |k| format!("{:.0} MiB", k / 1024.0)),
        tables_mib.map_or("unknown".into(), |m| format!("{m:.0} MiB"))
    ));
    report.push_str("| query | clients | requests | p50 ms | p99 ms | requests/s |\n");
    report.push_str("| --- | --- | --- | --- | --- | --- |\n");
    let rate = |l: &[f64]| l.len() as f64 / (l.iter().sum::<f64>() / 1e3);
    report.push_str(&format!(
        "| known paper, top 10 | 1 | {} | {:.2} | {:.2} | {:.0} |\n",
        one.len(),
        percentile(&one, 0.5),
        percentile(&one, 0.99),
        rate(&one)
    ));
    report.push_str(&format!(
        "| known paper, top 10 | {clients} | {} | {:.2} | {:.2} | {rps:.0} |\n",
        many.len(),
        percentile(&many, 0.5),
        percentile(&many, 0.99)
    ));
    if serves_new {
        report.push_str(&format!(
            "| new paper (features + up to 10 references), top 10 | 1 | {} | {:.2} | {:.2} | {:.0} |\n",
            newp.len(),
            percentile(&newp, 0.5),
            percentile(&newp, 0.99),
            rate(&newp)
        ));
    } else {
        report.push_str("| new paper | — | — | — | — | not served from an embeddings file |\n");
    }
    report.push_str(&format!(
        "\nrecall@10 of the fast path against exhaustive scoring over {recall_queries} papers: {recall:.3}\n"
    ));
    println!("{report}");
    if let Some(path) = out {
        let doc = json!({
            "meta": meta,
            "papers": n,
            "known_1_client": {"requests": one.len(), "p50_ms": percentile(&one, 0.5), "p99_ms": percentile(&one, 0.99)},
            "known_concurrent": {"clients": clients, "requests": many.len(), "seconds": wall, "requests_per_s": rps,
                "p50_ms": percentile(&many, 0.5), "p99_ms": percentile(&many, 0.99)},
            "new_paper_1_client": {"requests": newp.len(), "p50_ms": percentile(&newp, 0.5), "p99_ms": percentile(&newp, 0.99)},
            "recall_at_10": recall,
            "recall_queries": recall_queries,
            "label": label,
            "ready_s": ready_s,
            "ready_rss_kib": ready_rss_kib,
            "tables_mib": tables_mib,
        });
        update_results_md(&path, &report)?;
        let written = write_json(&path, &doc)?;
        println!("wrote {}", written.display());
    }
    Ok(())
}
