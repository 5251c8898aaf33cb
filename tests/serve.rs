//! `shardsage serve` as users meet it: real server processes on loopback ports (one process, and
//! two ranks under `mpirun`), real HTTP over TCP. V1 and V2 answers in the protocols' shapes and
//! equal to `predict`'s exhaustive ranking; the index's shortlist against exhaustive scoring; a
//! new paper that copies a stored one gets its embedding and ranking; the same answers from 1
//! and 2 ranks; every kind of bad input refused with a 4xx naming the field while the server
//! keeps serving (1,000 random byte strings included, memory flat); slow clients timed out; a
//! SIGTERM drains a request in flight and exits 0; the try-it page in headless Chromium; the
//! curl examples of docs/serving.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::mpi::{have_mpirun, mpi_env};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A generated graph in 2 parts and a small model trained on it, shared by the tests.
struct Fixture {
    parts: PathBuf,
    checkpoint: PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = common::tmp("serve", "fixture");
        let parts = common::generated_parts(&dir, 1500, 3, 16, 20, 2, None);
        let checkpoint = common::train_small_model(&parts, &dir.join("run"), 2, 15);
        Fixture { parts, checkpoint }
    })
}

/// A running server; stopped (SIGTERM, then SIGKILL) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    /// SIGTERM to `timeout`, which passes it on to the server (or to mpirun and the ranks);
    /// SIGKILL after 10 s. Killing `timeout` alone would leave the server running.
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn serve_args(extra: &[&str]) -> Vec<String> {
    let f = fixture();
    let mut a = common::strings(&[
        "serve",
        "--data",
        f.parts.to_str().unwrap(),
        "--checkpoint",
        f.checkpoint.to_str().unwrap(),
        "--address",
        "127.0.0.1:0",
        "--threads",
        "2",
    ]);
    a.extend(common::strings(extra));
    a
}

/// Starts `cmd` (stdout piped), reads the address it listens on and waits until it is ready.
fn start(mut cmd: Command) -> Server {
    cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("spawn the server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(a) = l.strip_prefix("shardsage serve: listening on http://") {
                    break a.trim().parse::<SocketAddr>().expect("address");
                }
            }
            _ => {
                let _ = child.kill();
                panic!("the server ended before listening: {:?}", child.wait());
            }
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let server = Server { child, addr };
    let t0 = Instant::now();
    loop {
        if let Ok((200, _)) = http(server.addr, "GET", "/v2/health/ready", None, b"") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "not ready within 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn start_single(extra: &[&str]) -> Server {
    start_with(serve_args(extra))
}

fn start_with(args: Vec<String>) -> Server {
    let mut cmd = Command::new("timeout");
    cmd.arg("600").arg(common::bin()).args(args);
    cmd.env("RUST_LOG", "info");
    start(cmd)
}

fn start_mpi(w: usize, extra: &[&str]) -> Server {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "600", "mpirun", "-np", &w.to_string()])
        .arg(common::bin())
        .args(serve_args(extra));
    mpi_env(&mut cmd);
    start(cmd)
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`): status and body.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        req.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    read_response(&mut s)
}

fn read_response(s: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    Ok((status, body))
}

fn post_json(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let (status, text) = http(
        addr,
        "POST",
        path,
        Some("application/json"),
        body.to_string().as_bytes(),
    )
    .expect("request");
    let v =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {text}"));
    (status, v)
}

fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, text) = http(addr, "GET", path, None, b"").expect("request");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

const PREDICT: &str = "/v1/models/citations:predict";

/// Known-paper answers: (paper, score) per query.
fn candidates(v: &Value) -> Vec<Vec<(u64, f64)>> {
    v["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| {
            p["candidates"]
                .as_array()
                .expect("candidates")
                .iter()
                .map(|c| (c["paper"].as_u64().unwrap(), c["score"].as_f64().unwrap()))
                .collect()
        })
        .collect()
}

fn graph() -> &'static shardsage::graph::store::GraphPart {
    static G: OnceLock<shardsage::graph::store::GraphPart> = OnceLock::new();
    G.get_or_init(|| {
        shardsage::graph::loader::load_rank_parts(&fixture().parts, 0, 1).expect("parts")
    })
}

/// Original ids of some papers with links.
fn some_papers(n: usize) -> Vec<u64> {
    let g = graph();
    (0..g.num_local_nodes() as u64)
        .filter(|&i| !g.neighbors(i).is_empty())
        .step_by(37)
        .take(n)
        .map(|i| g.orig_id[i as usize])
        .collect()
}

/// `shardsage predict`'s exhaustive ranking of `paper`: (orig id, score printed to 4 places).
fn predict_cli(paper: u64, k: usize) -> Vec<(u64, f64)> {
    let f = fixture();
    let out = common::run_ok(&[
        "predict",
        "--data",
        f.parts.to_str().unwrap(),
        "--checkpoint",
        f.checkpoint.to_str().unwrap(),
        "--node",
        &paper.to_string(),
        "--top-k",
        &k.to_string(),
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 3 && w[0].parse::<u32>().is_ok())
                .then(|| (w[1].parse().unwrap(), w[2].parse().unwrap()))
        })
        .collect()
}

#[test]
fn v1_and_v2_answer_in_the_protocols_shapes_and_agree_with_exhaustive_scoring() {
    let s = start_single(&[]);
    let a = s.addr;
    assert_eq!(
        get_json(a, "/v1/models"),
        (200, json!({"models": ["citations"]}))
    );
    assert_eq!(
        get_json(a, "/v1/models/citations"),
        (200, json!({"name": "citations", "ready": true}))
    );
    assert_eq!(get_json(a, "/v2/health/live"), (200, json!({"live": true})));
    assert_eq!(
        get_json(a, "/v2/health/ready"),
        (200, json!({"ready": true}))
    );
    assert_eq!(get_json(a, "/v2/models/citations/ready").0, 200);
    let (st, meta) = get_json(a, "/v2/models/citations");
    assert_eq!(st, 200);
    assert_eq!(meta["name"], "citations");
    assert_eq!(meta["platform"], "shardsage");
    let names: Vec<&str> = meta["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["paper", "features", "references"]);
    assert_eq!(meta["inputs"][1]["shape"], json!([-1, 16]));

    // Exhaustive answers equal `predict`'s, which scores every paper one query at a time.
    let papers = some_papers(12);
    for &p in &papers[..3] {
        let (st, v) = post_json(
            a,
            PREDICT,
            &json!({"instances": [{"paper": p, "top_k": 10, "exact": true}]}),
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["predictions"][0]["paper"], p);
        let got = &candidates(&v)[0];
        let want = predict_cli(p, 10);
        assert_eq!(got.len(), 10);
        assert_eq!(
            got.iter().map(|c| c.0).collect::<Vec<_>>(),
            want.iter().map(|c| c.0).collect::<Vec<_>>(),
            "paper {p}: server vs predict"
        );
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g.1 - w.1).abs() < 1e-3,
                "paper {p}: score {} vs {}",
                g.1,
                w.1
            );
        }
        // Known links are excluded unless asked for; the paper itself always.
        let g = graph();
        let id = g.orig_id.iter().position(|&o| o == p).unwrap() as u64;
        let linked: Vec<u64> = g
            .neighbors(id)
            .iter()
            .map(|&v| g.orig_id[v as usize])
            .collect();
        assert!(got.iter().all(|c| !linked.contains(&c.0) && c.0 != p));
        let (_, v) = post_json(
            a,
            PREDICT,
            &json!({"instances": [{"paper": p, "top_k": 50, "exact": true, "include_known": true}]}),
        );
        let with_known = &candidates(&v)[0];
        assert!(with_known.iter().all(|c| c.0 != p));
        assert!(
            with_known.windows(2).all(|w| w[0].1 >= w[1].1),
            "sorted by score"
        );
    }

    // The fast path: the index's shortlist re-scored exactly, against exhaustive scoring.
    let fast_req: Vec<Value> = papers.iter().map(|&p| json!({"paper": p})).collect();
    let exact_req: Vec<Value> = papers
        .iter()
        .map(|&p| json!({"paper": p, "exact": true}))
        .collect();
    let (_, fast) = post_json(a, PREDICT, &json!({"instances": fast_req}));
    let (_, exact) = post_json(a, PREDICT, &json!({"instances": exact_req}));
    let (fast, exact) = (candidates(&fast), candidates(&exact));
    let mut hits = 0;
    for (f, e) in fast.iter().zip(&exact) {
        assert_eq!(f.len(), 10);
        hits += f.iter().filter(|c| e.iter().any(|x| x.0 == c.0)).count();
        // What the fast path lists carries the exact scores.
        for c in f {
            if let Some(x) = e.iter().find(|x| x.0 == c.0) {
                assert!((x.1 - c.1).abs() < 1e-5);
            }
        }
    }
    let recall = hits as f64 / (10 * papers.len()) as f64;
    eprintln!("recall@10 of the fast path against exhaustive scoring: {recall:.3}");
    assert!(recall >= 0.9, "recall@10 {recall}");

    // V2 infer: the same answers as V1, as typed tensors, with the request id echoed.
    let body = json!({
        "id": "q-1",
        "parameters": {"top_k": 5, "exact": true},
        "inputs": [{"name": "paper", "datatype": "INT64", "shape": [2], "data": [papers[0], papers[1]]}],
    });
    let (st, v) = post_json(a, "/v2/models/citations/infer", &body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["model_name"], "citations");
    assert_eq!(v["id"], "q-1");
    let outs = v["outputs"].as_array().unwrap();
    assert_eq!(outs[0]["name"], "paper");
    assert_eq!(outs[0]["datatype"], "INT64");
    assert_eq!(outs[0]["shape"], json!([2, 5]));
    assert_eq!(outs[1]["name"], "score");
    assert_eq!(outs[1]["datatype"], "FP32");
    assert_eq!(outs[1]["shape"], json!([2, 5]));
    for (q, &p) in papers[..2].iter().enumerate() {
        let v1: Vec<u64> = exact[papers.iter().position(|&x| x == p).unwrap()][..5]
            .iter()
            .map(|c| c.0)
            .collect();
        let v2: Vec<u64> = outs[0]["data"].as_array().unwrap()[q * 5..(q + 1) * 5]
            .iter()
            .map(|x| x.as_u64().unwrap())
            .collect();
        assert_eq!(v1, v2, "V1 and V2 answers of paper {p}");
    }

    // Metrics in Prometheus' text format count what happened.
    let (st, text) = http(a, "GET", "/metrics", None, b"").unwrap();
    assert_eq!(st, 200);
    assert!(
        text.contains("shardsage_requests_total{endpoint=\"v1_predict\",code=\"200\"}"),
        "{text}"
    );
    assert!(text.contains("# TYPE shardsage_request_duration_seconds histogram"));
    assert!(text.contains(
        "shardsage_request_duration_seconds_bucket{endpoint=\"v2_infer\",le=\"+Inf\"} 1"
    ));
    assert!(text.contains(&format!(
        "shardsage_embeddings_loaded {}",
        graph().num_local_nodes()
    )));
    assert!(text.contains("shardsage_ready 1"));
}

#[test]
fn a_new_paper_that_copies_a_stored_one_gets_its_embedding_and_ranking() {
    let s = start_single(&[]);
    let g = graph();
    for &p in &some_papers(4) {
        let id = g.orig_id.iter().position(|&o| o == p).unwrap() as u64;
        let refs: Vec<u64> = g
            .neighbors(id)
            .iter()
            .map(|&v| g.orig_id[v as usize])
            .collect();
        let feats = g.feature_row(id).to_vec();
        let (st, v) = post_json(
            s.addr,
            PREDICT,
            &json!({"instances": [
                {"paper": p, "top_k": 11, "exact": true, "return_embedding": true},
                {"features": feats, "references": refs, "top_k": 12, "exact": true, "return_embedding": true},
            ]}),
        );
        assert_eq!(st, 200, "{v}");
        let emb = |i: usize| -> Vec<f64> {
            v["predictions"][i]["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        let (known, new) = (emb(0), emb(1));
        assert_eq!(known.len(), new.len());
        let scale = known.iter().map(|x| x.abs()).fold(1e-6, f64::max);
        for (a, b) in known.iter().zip(&new) {
            assert!((a - b).abs() <= 1e-4 * scale, "paper {p}: {a} vs {b}");
        }
        assert_eq!(v["predictions"][1]["paper"], Value::Null);
        let c = candidates(&v);
        // The new paper may list the paper it copies; apart from it, the same ranking.
        let new_ids: Vec<u64> = c[1]
            .iter()
            .map(|x| x.0)
            .filter(|&x| x != p)
            .take(10)
            .collect();
        let old_ids: Vec<u64> = c[0].iter().map(|x| x.0).take(10).collect();
        assert_eq!(new_ids, old_ids, "paper {p}");
    }
    // The same through V2's tensors (references padded with -1).
    let p = some_papers(1)[0];
    let id = g.orig_id.iter().position(|&o| o == p).unwrap() as u64;
    let mut refs: Vec<i64> = g
        .neighbors(id)
        .iter()
        .map(|&v| g.orig_id[v as usize] as i64)
        .collect();
    let width = refs.len() + 2;
    refs.resize(width, -1);
    let body = json!({
        "parameters": {"top_k": 3, "exact": true},
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [1, 16], "data": g.feature_row(id)},
            {"name": "references", "datatype": "INT64", "shape": [1, width], "data": refs},
        ],
    });
    let (st, v) = post_json(s.addr, "/v2/models/citations/infer", &body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["outputs"][0]["shape"], json!([1, 3]));
}

#[test]
fn answers_are_the_same_served_from_one_and_two_ranks_and_sigterm_ends_both_with_0() {
    if !have_mpirun() {
        assert!(
            std::env::var_os("CI").is_none(),
            "mpirun not found: run scripts/setup.sh"
        );
        eprintln!("skipped: mpirun not found (run scripts/setup.sh)");
        return;
    }
    let papers = some_papers(8);
    let req: Vec<Value> = papers
        .iter()
        .flat_map(|&p| [json!({"paper": p}), json!({"paper": p, "exact": true})])
        .collect();
    let body = json!({"instances": req});
    let one = start_single(&[]);
    let (st, a) = post_json(one.addr, PREDICT, &body);
    assert_eq!(st, 200);
    drop(one);
    // A flag value no other test uses tags this job's rank processes.
    let mut two = start_mpi(2, &["--drain-seconds", "19"]);
    let (st, b) = post_json(two.addr, PREDICT, &body);
    assert_eq!(st, 200);
    let (ca, cb) = (candidates(&a), candidates(&b));
    for (x, y) in ca.iter().zip(&cb) {
        assert_eq!(
            x.iter().map(|c| c.0).collect::<Vec<_>>(),
            y.iter().map(|c| c.0).collect::<Vec<_>>()
        );
        for (p, q) in x.iter().zip(y) {
            assert!((p.1 - q.1).abs() <= 1e-5, "scores {} vs {}", p.1, q.1);
        }
    }
    // SIGTERM to every rank (as a scheduler or Kubernetes delivers it): rank 0 drains, rank 1
    // keeps waiting for it, both exit 0 and so does mpirun.
    let ranks: Vec<u32> = common::mpi::rank_pids(&common::bin(), "--drain-seconds")
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.windows(19).any(|w| w == b"--drain-seconds\x0019\x00"))
        })
        .collect();
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    for p in ranks {
        // SAFETY: signalling the job's rank processes.
        unsafe { libc::kill(p as i32, libc::SIGTERM) };
    }
    let t0 = Instant::now();
    let status = two.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

/// What is sent (a name, the path, the content type, the body) and what must come back (the
/// status and a word of the message).
type BadCase<'a> = (&'a str, &'a str, Option<&'a str>, Vec<u8>, u16, &'a str);

#[test]
fn bad_input_is_refused_with_a_4xx_naming_the_field_and_the_server_keeps_serving() {
    let s = start_single(&[
        "--max-top-k",
        "100",
        "--max-body-bytes",
        "65536",
        "--client-timeout-seconds",
        "1",
    ]);
    let a = s.addr;
    let p = some_papers(1)[0];
    let v2 = "/v2/models/citations/infer";
    let cases: Vec<BadCase> = vec![
        ("malformed JSON", PREDICT, Some("application/json"), b"{\"instances\": [".to_vec(), 400, "malformed JSON"),
        ("NaN is not JSON", PREDICT, Some("application/json"), br#"{"instances": [{"features": [NaN]}]}"#.to_vec(), 400, "malformed JSON"),
        ("wrong content type", PREDICT, Some("text/plain"), br#"{"instances": []}"#.to_vec(), 415, "Content-Type"),
        ("no content type", PREDICT, None, br#"{"instances": []}"#.to_vec(), 415, "Content-Type"),
        ("unknown model", "/v1/models/other:predict", Some("application/json"), json!({"instances": [{"paper": p}]}).to_string().into_bytes(), 404, "model"),
        ("unknown model (V2)", "/v2/models/other/infer", Some("application/json"), b"{}".to_vec(), 404, "model"),
        ("no instances", PREDICT, Some("application/json"), b"{}".to_vec(), 400, "instances"),
        ("unknown paper", PREDICT, Some("application/json"), json!({"instances": [{"paper": 987654321u64}]}).to_string().into_bytes(), 404, "instances[0].paper"),
        ("paper id not a number", PREDICT, Some("application/json"), json!({"instances": [{"paper": "x"}]}).to_string().into_bytes(), 400, "instances[0].paper"),
        ("top_k 0", PREDICT, Some("application/json"), json!({"instances": [{"paper": p, "top_k": 0}]}).to_string().into_bytes(), 400, "top_k"),
        ("top_k above the bound", PREDICT, Some("application/json"), json!({"instances": [{"paper": p, "top_k": 101}]}).to_string().into_bytes(), 400, "top_k"),
        ("features of the wrong width", PREDICT, Some("application/json"), json!({"instances": [{"features": [1.0, 2.0], "references": []}]}).to_string().into_bytes(), 400, "instances[0].features"),
        ("a feature that is not a number", PREDICT, Some("application/json"), json!({"instances": [{"features": vec![json!("a"); 16], "references": []}]}).to_string().into_bytes(), 400, "instances[0].features[0]"),
        ("references to unknown papers", PREDICT, Some("application/json"), json!({"instances": [{"features": vec![0.5; 16], "references": [p, 987654321u64]}]}).to_string().into_bytes(), 404, "instances[0].references[1]"),
        ("a body over the limit", PREDICT, Some("application/json"), vec![b' '; 70000], 413, "body"),
        ("V2 wrong datatype", v2, Some("application/json"), json!({"inputs": [{"name": "paper", "datatype": "FP32", "shape": [1], "data": [1.0]}]}).to_string().into_bytes(), 400, "datatype"),
        ("V2 wrong shape", v2, Some("application/json"), json!({"inputs": [{"name": "paper", "datatype": "INT64", "shape": [3], "data": [p]}]}).to_string().into_bytes(), 400, "shape"),
        ("V2 features of the wrong width", v2, Some("application/json"), json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}).to_string().into_bytes(), 400, "features"),
        ("V2 unknown tensor", v2, Some("application/json"), json!({"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": [1]}]}).to_string().into_bytes(), 400, "'x'"),
        ("not an endpoint", "/v3/anything", Some("application/json"), b"{}".to_vec(), 404, "path"),
    ];
    for (what, path, ct, body, status, field) in &cases {
        let (st, text) = http(a, "POST", path, *ct, body).expect(what);
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{what}: not JSON: {text}"));
        assert_eq!(st, *status, "{what}: {text}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error message: {text}"));
        assert!(msg.contains(field), "{what}: '{msg}' does not name {field}");
    }

    // A body over the limit that declares no length (chunked): refused as it arrives.
    let mut chunked = TcpStream::connect(a).unwrap();
    chunked
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(chunked, "POST {PREDICT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    for _ in 0..7 {
        let _ = write!(chunked, "2710\r\n{}\r\n", " ".repeat(10_000));
    }
    let _ = write!(chunked, "0\r\n\r\n");
    let (st, text) = read_response(&mut chunked).expect("a response to the chunked body");
    assert_eq!(st, 413, "{text}");
    assert!(text.contains("body"), "{text}");
    // A slow body: headers, then part of the body, then nothing: 408 after the client timeout.
    let mut slow = TcpStream::connect(a).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(slow, "POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"inst").unwrap();
    let t0 = Instant::now();
    let (st, text) = read_response(&mut slow).expect("a response to the slow body");
    assert_eq!(st, 408, "{text}");
    assert!(text.contains("body"), "{text}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    // Slow headers: the connection is closed after the client timeout.
    let mut slow = TcpStream::connect(a).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(slow, "POST {PREDICT} HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "slow headers held for {:?}",
        t0.elapsed()
    );

    // 1,000 random byte strings: as bodies of every endpoint and as raw requests.
    // `timeout` is the child; the server is its child.
    let before = server_rss(s.pid()).expect("the server's RSS");
    let endpoints = [
        PREDICT,
        "/v2/models/citations/infer",
        "/v1/models",
        "/v2/health/ready",
        "/metrics",
        "/",
    ];
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..1000 {
        let len = (next() % 300) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let path = endpoints[i % endpoints.len()];
        if i % 3 == 0 {
            // Raw bytes instead of a request.
            if let Ok(mut c) = TcpStream::connect(a) {
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let _ = c.write_all(&bytes);
                let _ = c.shutdown(std::net::Shutdown::Write);
                let mut sink = Vec::new();
                let _ = c.read_to_end(&mut sink);
            }
        } else {
            let method = if path.contains("predict") || path.contains("infer") {
                "POST"
            } else {
                "GET"
            };
            let (st, _) =
                http(a, method, path, Some("application/json"), &bytes).expect("a response");
            assert!(st < 500, "{path}: {st} for random bytes");
        }
    }
    let after = server_rss(s.pid()).expect("the server's RSS");
    eprintln!("server RSS before and after 1,000 random inputs: {before} kB, {after} kB");
    assert!(
        after < before + 32 * 1024,
        "RSS grew from {before} to {after} kB"
    );
    // Still serving.
    let (st, v) = post_json(a, PREDICT, &json!({"instances": [{"paper": p}]}));
    assert_eq!(st, 200, "{v}");
}

/// The pid of the shardsage process under the `timeout` process `pid`.
fn server_pid(pid: i32) -> Option<i32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().next()?.parse().ok()
}

/// RSS (kB) of the shardsage process under the `timeout` process `pid`.
fn server_rss(pid: i32) -> Option<u64> {
    let child = server_pid(pid)?;
    let status = std::fs::read_to_string(format!("/proc/{child}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse().ok())
}

#[test]
fn sigterm_under_load_drains_the_requests_in_flight_and_exits_0() {
    let mut s = start_single(&["--client-timeout-seconds", "20"]);
    let p = some_papers(1)[0];
    let body = json!({"instances": [{"paper": p}]}).to_string();
    let (head, tail) = body.split_at(body.len() / 2);
    // A request in flight: headers and half of its body sent before the signal.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        c,
        "POST {PREDICT} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
        body.len()
    )
    .unwrap();
    // Until the server is answering it (it counts requests in flight).
    let t0 = Instant::now();
    loop {
        let (_, m) = http(s.addr, "GET", "/metrics", None, b"").unwrap();
        if m.contains("shardsage_requests_in_flight 1") {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the request never got in flight"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Load beside it: clients asking until the server stops accepting them.
    let addr = s.addr;
    let load: Vec<_> = (0..4)
        .map(|_| {
            let body = json!({"instances": [{"paper": p}]}).to_string();
            std::thread::spawn(move || {
                let mut answered = Vec::new();
                // A refused or reset connection (after the listener closed) ends the client.
                while let Ok((st, text)) = http(
                    addr,
                    "POST",
                    PREDICT,
                    Some("application/json"),
                    body.as_bytes(),
                ) {
                    answered.push((st, text));
                }
                answered
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // To the server itself: `timeout` would pass a signal on twice (to the child and to its
    // process group), and a second SIGTERM means "exit now".
    let server = server_pid(s.pid()).expect("the server's pid");
    // SAFETY: signalling our own grandchild.
    unsafe { libc::kill(server, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(500));
    // New connections are refused while the request in flight is finished.
    assert!(
        http(s.addr, "GET", "/v2/health/live", None, b"").is_err(),
        "still accepting after SIGTERM"
    );
    c.write_all(tail.as_bytes()).unwrap();
    let (st, text) = read_response(&mut c).expect("the request in flight is answered");
    assert_eq!(st, 200, "{text}");
    let t0 = Instant::now();
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(t0.elapsed() < Duration::from_secs(10));
    // Every request the server took under load was answered whole.
    let mut answered = 0;
    for h in load {
        for (st, text) in h.join().unwrap() {
            assert_eq!(st, 200, "{text}");
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("cut off ({e}): {text}"));
            assert_eq!(candidates(&v)[0].len(), 10);
            answered += 1;
        }
    }
    assert!(answered > 0, "the load got no answer before the stop");
    eprintln!("{answered} requests of the load answered whole around the SIGTERM");
}

#[test]
fn the_page_ranks_a_papers_citations_in_headless_chromium() {
    let Some(chromium) = ["chromium", "chromium-browser"].iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromium not found: run scripts/setup.sh"
        );
        eprintln!("skipped: chromium not found (run scripts/setup.sh)");
        return;
    };
    let s = start_single(&[]);
    let p = some_papers(1)[0];
    let (_, v) = post_json(
        s.addr,
        PREDICT,
        &json!({"instances": [{"paper": p, "top_k": 5}]}),
    );
    let want: Vec<String> = candidates(&v)[0].iter().map(|c| c.0.to_string()).collect();
    let dir = common::tmp("serve", "chromium");
    let shot = dir.join("page.png");
    let url = s.url(&format!("/?paper={p}&top_k=5"));
    let browse = |extra: &[String]| {
        let out = Command::new("timeout")
            .arg("120")
            .arg(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--virtual-time-budget=10000",
                "--window-size=1000,900",
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.join(format!("profile-{}", extra.len())).display()
            ))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium");
        assert!(
            out.status.success(),
            "chromium: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dom = browse(&["--dump-dom".to_string()]);
    let rows: Vec<&str> = dom.split("<tr class=\"candidate\">").skip(1).collect();
    assert_eq!(rows.len(), 5, "the page lists 5 candidates:\n{dom}");
    for (row, id) in rows.iter().zip(&want) {
        assert!(
            row.contains(&format!("<td>{id}</td>")),
            "row {row} should list paper {id}"
        );
    }
    browse(&[format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    eprintln!(
        "screenshot of the page for paper {p}: {} ({} bytes)",
        shot.display(),
        png.len()
    );
}

/// The `curl` lines of docs/serving.md's example blocks (```sh serving-example), in order.
fn doc_examples() -> Vec<String> {
    let doc =
        std::fs::read_to_string(Path::new(ROOT).join("docs/serving.md")).expect("docs/serving.md");
    let mut out = Vec::new();
    let mut inside = false;
    let mut current = String::new();
    for line in doc.lines() {
        if line.trim_start().starts_with("```sh serving-example") {
            inside = true;
            continue;
        }
        if inside && line.trim_start().starts_with("```") {
            inside = false;
            continue;
        }
        if inside {
            // Lines ending in a backslash continue the command.
            current.push_str(line.trim_end_matches('\\'));
            current.push(' ');
            if !line.ends_with('\\') {
                out.push(std::mem::take(&mut current).trim().to_string());
            }
        }
    }
    out
}

#[test]
fn the_curl_examples_of_the_serving_docs_run_against_a_real_server() {
    let s = start_single(&[]);
    let examples = doc_examples();
    assert!(
        examples.len() >= 6,
        "docs/serving.md has {} examples",
        examples.len()
    );
    let g = graph();
    let paper = some_papers(1)[0];
    let id = g.orig_id.iter().position(|&o| o == paper).unwrap() as u64;
    let refs: Vec<String> = g
        .neighbors(id)
        .iter()
        .take(3)
        .map(|&v| g.orig_id[v as usize].to_string())
        .collect();
    let feats: Vec<String> = g.feature_row(id).iter().map(|x| x.to_string()).collect();
    for cmd in &examples {
        assert!(
            cmd.starts_with("curl "),
            "example is not a curl command: {cmd}"
        );
        let out = Command::new("timeout")
            .args(["60", "bash", "-c", cmd])
            .env("URL", format!("http://{}", s.addr))
            .env("PAPER", paper.to_string())
            .env("REFS", refs.join(","))
            .env("FEATURES", feats.join(","))
            .output()
            .expect("bash");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{cmd}: {:?}\n{text}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        if !cmd.contains("/metrics") {
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{cmd}: not JSON ({e}): {text}"));
            assert!(v.get("error").is_none(), "{cmd}: {v}");
        } else {
            assert!(text.contains("shardsage_ready 1"), "{text}");
        }
    }
}

#[test]
fn an_embeddings_file_serves_the_same_answers_and_alone_scores_by_dot_product() {
    let f = fixture();
    let dir = common::tmp("serve", "embeddings");
    let file = dir.join("embeddings.h5");
    let file_s = file.to_str().unwrap();
    common::run_ok(&[
        "embed",
        "--data",
        f.parts.to_str().unwrap(),
        "--checkpoint",
        f.checkpoint.to_str().unwrap(),
        "--out",
        file_s,
    ]);
    let papers = some_papers(4);
    let req = json!({"instances": papers.iter().map(|&p| json!({"paper": p, "exact": true, "top_k": 8})).collect::<Vec<_>>()});
    // Computed at start-up, or read from the file `embed` wrote: the same answers.
    let computed = start_single(&[]);
    let (_, a) = post_json(computed.addr, PREDICT, &req);
    drop(computed);
    let from_file = start_single(&["--embeddings", file_s]);
    let (st, b) = post_json(from_file.addr, PREDICT, &req);
    assert_eq!(st, 200, "{b}");
    for (x, y) in candidates(&a).iter().zip(&candidates(&b)) {
        assert_eq!(
            x.iter().map(|c| c.0).collect::<Vec<_>>(),
            y.iter().map(|c| c.0).collect::<Vec<_>>()
        );
        for (p, q) in x.iter().zip(y) {
            assert!((p.1 - q.1).abs() < 1e-4, "{} vs {}", p.1, q.1);
        }
    }
    // A file holds no layer inputs: new papers are refused, naming the field.
    let (st, v) = post_json(
        from_file.addr,
        PREDICT,
        &json!({"instances": [{"features": vec![0.5; 16], "references": []}]}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("features"), "{v}");
    drop(from_file);

    // The file alone (walk embeddings are served this way): ranked by the dot product, only the
    // paper itself left out (no graph to know its links).
    let alone = start_with(common::strings(&[
        "serve",
        "--embeddings",
        file_s,
        "--address",
        "127.0.0.1:0",
        "--threads",
        "2",
    ]));
    let (emb, dim, orig) = shardsage::serve::read_embeddings(&file).unwrap();
    for &p in &papers[..2] {
        let (st, v) = post_json(
            alone.addr,
            PREDICT,
            &json!({"instances": [{"paper": p, "exact": true, "top_k": 5}]}),
        );
        assert_eq!(st, 200, "{v}");
        let q = orig.iter().position(|&o| o == p).unwrap();
        let mut want: Vec<(f32, u64)> = (0..orig.len())
            .filter(|&i| i != q)
            .map(|i| {
                let s: f32 = (0..dim).map(|j| emb[q * dim + j] * emb[i * dim + j]).sum();
                (s, orig[i])
            })
            .collect();
        want.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
        let got = &candidates(&v)[0];
        assert_eq!(
            got.iter().map(|c| c.0).collect::<Vec<_>>(),
            want[..5].iter().map(|w| w.1).collect::<Vec<_>>(),
            "paper {p}"
        );
    }
}

#[test]
fn readiness_and_predictions_say_503_until_the_embeddings_are_in_memory() {
    // A file large enough that reading it and clustering it take a moment: 100,000 random rows.
    let dir = common::tmp("serve", "loading");
    let file = dir.join("big.h5");
    let (n, dim) = (100_000usize, 64usize);
    shardsage::graph::store::init_hdf5();
    {
        let f = hdf5::File::create(&file).unwrap();
        let emb: Vec<f32> = (0..n * dim)
            .map(|i| {
                shardsage::sample::rng::unit_f32(shardsage::sample::rng::hash(
                    5, 0, 0, 0, i as u64, 0,
                )) - 0.5
            })
            .collect();
        f.new_dataset::<f32>()
            .shape((n, dim))
            .create("embedding")
            .unwrap()
            .write_raw(&emb)
            .unwrap();
        let ids: Vec<u64> = (0..n as u64).map(|i| 1_000_000 + i).collect();
        f.new_dataset::<u64>()
            .shape(n)
            .create("orig_id")
            .unwrap()
            .write_raw(&ids)
            .unwrap();
    }
    let mut cmd = Command::new("timeout");
    cmd.arg("600")
        .arg(common::bin())
        .args([
            "serve",
            "--embeddings",
            file.to_str().unwrap(),
            "--address",
            "127.0.0.1:0",
            "--threads",
            "2",
        ])
        .stdout(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = lines
        .find_map(|l| {
            l.ok()?
                .strip_prefix("shardsage serve: listening on http://")?
                .trim()
                .parse()
                .ok()
        })
        .expect("listening");
    std::thread::spawn(move || for _ in lines {});
    // Listening at once: alive, not ready, predictions refused with a reason.
    assert_eq!(
        get_json(addr, "/v2/health/live"),
        (200, json!({"live": true}))
    );
    assert_eq!(
        get_json(addr, "/v2/health/ready"),
        (503, json!({"ready": false}))
    );
    let (st, v) = post_json(addr, PREDICT, &json!({"instances": [{"paper": 1_000_000}]}));
    assert_eq!(st, 503, "{v}");
    assert!(v["error"].as_str().unwrap().contains("loading"), "{v}");
    let (_, metrics) = http(addr, "GET", "/metrics", None, b"").unwrap();
    assert!(metrics.contains("shardsage_ready 0"), "{metrics}");
    let t0 = Instant::now();
    while get_json(addr, "/v2/health/ready").0 != 200 {
        assert!(t0.elapsed() < Duration::from_secs(300), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "ready {:.1} s after listening ({n} rows of {dim})",
        t0.elapsed().as_secs_f64()
    );
    let (st, v) = post_json(
        addr,
        PREDICT,
        &json!({"instances": [{"paper": 1_000_000, "top_k": 3}]}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(candidates(&v)[0].len(), 3);
    let server = server_pid(child.id() as i32).expect("the server's pid");
    // SAFETY: signalling our own grandchild.
    unsafe { libc::kill(server, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
}
