//! TensorBoard event files: parsed back by a reader written here (both CRCs checked, protobuf
//! decoded field by field) and by TensorBoard's own `EventAccumulator` from the Python package
//! installed by scripts/setup.sh into .deps/py (that half is skipped, with a message, when the
//! package is absent).

use std::path::{Path, PathBuf};

use shardsage::train::tensorboard::{masked_crc32c, TbWriter};

#[derive(Debug, Default, PartialEq)]
struct Event {
    wall_time: f64,
    step: i64,
    file_version: Option<String>,
    scalars: Vec<(String, f32)>,
}

fn varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = buf[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// Splits a protobuf message into (field, wire type, payload) entries.
fn fields(buf: &[u8]) -> Vec<(u64, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos);
        let (field, wire) = (key >> 3, (key & 7) as u8);
        let payload = match wire {
            0 => varint(buf, &mut pos).to_le_bytes().to_vec(),
            1 => {
                pos += 8;
                buf[pos - 8..pos].to_vec()
            }
            2 => {
                let len = varint(buf, &mut pos) as usize;
                pos += len;
                buf[pos - len..pos].to_vec()
            }
            5 => {
                pos += 4;
                buf[pos - 4..pos].to_vec()
            }
            w => panic!("unexpected wire type {w}"),
        };
        out.push((field, wire, payload));
    }
    out
}

fn decode_event(data: &[u8]) -> Event {
    let mut ev = Event::default();
    for (field, wire, p) in fields(data) {
        match (field, wire) {
            (1, 1) => ev.wall_time = f64::from_le_bytes(p.try_into().unwrap()),
            (2, 0) => ev.step = u64::from_le_bytes(p.try_into().unwrap()) as i64,
            (3, 2) => ev.file_version = Some(String::from_utf8(p).unwrap()),
            (5, 2) => {
                for (f, w, value) in fields(&p) {
                    assert_eq!((f, w), (1, 2), "Summary.value");
                    let mut tag = String::new();
                    let mut simple = None;
                    for (vf, vw, vp) in fields(&value) {
                        match (vf, vw) {
                            (1, 2) => tag = String::from_utf8(vp).unwrap(),
                            (2, 5) => simple = Some(f32::from_le_bytes(vp.try_into().unwrap())),
                            other => panic!("unexpected Summary.Value field {other:?}"),
                        }
                    }
                    ev.scalars.push((tag, simple.expect("simple_value")));
                }
            }
            other => panic!("unexpected Event field {other:?}"),
        }
    }
    ev
}

/// Reads every TFRecord of a file, checking both masked CRCs.
fn read_records(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let bytes = std::fs::read(path).unwrap();
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < bytes.len() {
        if bytes.len() - pos < 12 {
            return Err(format!("short record header at {pos}"));
        }
        let len_bytes = &bytes[pos..pos + 8];
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
        let len_crc = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap());
        if len_crc != masked_crc32c(len_bytes) {
            return Err(format!("length crc mismatch at {pos}"));
        }
        let data = &bytes[pos + 12..pos + 12 + len];
        let data_crc =
            u32::from_le_bytes(bytes[pos + 12 + len..pos + 16 + len].try_into().unwrap());
        if data_crc != masked_crc32c(data) {
            return Err(format!("data crc mismatch at {pos}"));
        }
        out.push(data.to_vec());
        pos += 16 + len;
    }
    Ok(out)
}

fn loss_at(step: i64) -> f32 {
    1.0 / (1.0 + step as f32 * 0.1)
}

/// Writes a small run: a loss per step, two eval metrics every 10 steps, one huge step.
fn write_run(run_dir: &Path) -> PathBuf {
    let mut tb = TbWriter::create(run_dir).unwrap();
    for step in 0..50i64 {
        tb.scalar("train/loss", step, loss_at(step)).unwrap();
        if step % 10 == 9 {
            tb.scalars(
                step,
                &[("valid/mrr", step as f32 / 100.0), ("valid/hits@10", 0.5)],
            )
            .unwrap();
        }
    }
    tb.scalar("train/loss", 1 << 40, -2.5).unwrap();
    let path = tb.path().to_path_buf();
    drop(tb);
    path
}

#[test]
fn event_file_name_framing_and_scalars() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_run(dir.path());
    assert_eq!(path.parent().unwrap(), dir.path().join("tb"));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let parts: Vec<&str> = name.splitn(4, '.').collect();
    assert_eq!(&parts[..2], ["events", "out"]);
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    let ts: u64 = name["events.out.tfevents.".len()..]
        .split('.')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(ts > 1_600_000_000, "{name}");

    let events: Vec<Event> = read_records(&path)
        .unwrap()
        .iter()
        .map(|d| decode_event(d))
        .collect();
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert!(events[0].scalars.is_empty());
    let losses: Vec<(i64, f32)> = events
        .iter()
        .flat_map(|e| {
            e.scalars
                .iter()
                .filter(|(t, _)| t == "train/loss")
                .map(move |(_, v)| (e.step, *v))
        })
        .collect();
    assert_eq!(losses.len(), 51);
    for (step, v) in &losses[..50] {
        assert_eq!(*v, loss_at(*step));
    }
    assert_eq!(losses[50], (1 << 40, -2.5));
    let evals: Vec<&Event> = events.iter().filter(|e| e.scalars.len() == 2).collect();
    assert_eq!(evals.len(), 5);
    assert_eq!(evals[0].step, 9);
    assert_eq!(
        evals[0].scalars,
        vec![
            ("valid/mrr".to_string(), 0.09),
            ("valid/hits@10".to_string(), 0.5)
        ]
    );
    assert!(events.iter().all(|e| e.wall_time > 1.6e9));

    // The checker is not blind: one flipped byte in a record is caught.
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 6;
    bytes[last] ^= 1;
    let bad = dir.path().join("bad.tfevents");
    std::fs::write(&bad, &bytes).unwrap();
    assert!(read_records(&bad).unwrap_err().contains("crc mismatch"));
}

#[test]
fn tensorboard_reads_the_events() {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/py");
    if !py.join("tensorboard").is_dir() {
        eprintln!(
            "SKIPPED the TensorBoard half: {} has no tensorboard package (run scripts/setup.sh); \
             the Rust reader test still checks the files",
            py.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    write_run(dir.path());
    let script = r#"
import json, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
ea.Reload()
out = {tag: [[e.step, e.value] for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}
print(json.dumps(out))
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path().join("tb"))
        .env("PYTHONPATH", &py)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "EventAccumulator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.trim().lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let loss = json["train/loss"].as_array().expect("train/loss scalars");
    assert_eq!(loss.len(), 51, "{json}");
    for (i, point) in loss[..50].iter().enumerate() {
        assert_eq!(point[0].as_i64(), Some(i as i64));
        assert_eq!(point[1].as_f64().unwrap() as f32, loss_at(i as i64));
    }
    assert_eq!(loss[50][0].as_i64(), Some(1 << 40));
    assert_eq!(loss[50][1].as_f64(), Some(-2.5));
    let mrr = json["valid/mrr"].as_array().expect("valid/mrr scalars");
    let steps: Vec<i64> = mrr.iter().map(|p| p[0].as_i64().unwrap()).collect();
    assert_eq!(steps, vec![9, 19, 29, 39, 49]);
    assert_eq!(json["valid/hits@10"].as_array().unwrap().len(), 5);
}
