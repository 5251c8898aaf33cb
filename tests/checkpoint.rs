//! Checkpoints on real files: bit-identical round trip, truncated / corrupt / foreign files,
//! `latest_good` skipping a corrupt newest checkpoint (with a warning naming it), keep-last-N
//! pruning that spares best.ssck, compatibility errors, and atomicity under a real failing write
//! (a file-size limit makes the write fail with EFBIG in a child process).

use std::path::Path;
use std::sync::{Mutex, OnceLock};

use shardsage::sample::rng::{hash, normal};
use shardsage::train::checkpoint::{is_checkpoint, summary, Checkpoint, CheckpointDir, ParamEntry};

/// Captures log records so the test can check the warnings.
struct CaptureLog;
static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl log::Log for CaptureLog {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        LOGGED
            .lock()
            .unwrap()
            .push(format!("{} {}", record.level(), record.args()));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        log::set_boxed_logger(Box::new(CaptureLog)).unwrap();
        log::set_max_level(log::LevelFilter::Debug);
    });
}

fn layout() -> Vec<ParamEntry> {
    vec![
        ParamEntry {
            name: "sage0.w_self".into(),
            offset: 0,
            shape: vec![16, 8],
        },
        ParamEntry {
            name: "sage0.bias".into(),
            offset: 128,
            shape: vec![8],
        },
    ]
}

fn make_checkpoint(global_step: u64) -> Checkpoint {
    let n = 136;
    let mut params: Vec<f32> = (0..n as u64)
        .map(|i| {
            normal(
                hash(1, global_step, 0, 0, i, 0),
                hash(1, global_step, 0, 0, i, 1),
            )
        })
        .collect();
    // Values that a lossy format would change.
    params[0] = -0.0;
    params[1] = f32::from_bits(1); // smallest subnormal
    params[2] = f32::INFINITY;
    params[3] = f32::from_bits(0x7fc0_1234); // NaN with a payload
    Checkpoint {
        adam_m: params.iter().map(|p| p * 0.1).collect(),
        adam_v: params.iter().map(|p| p * p).collect(),
        params,
        adam_t: global_step,
        epoch: global_step / 10,
        step: global_step % 10,
        global_step,
        config: serde_json::json!({"lr": 0.0005, "fanouts": [15, 10, 5], "hidden": 256}),
        dataset_fingerprint: "sha256:abc123".into(),
        layout: layout(),
        best_metric: Some(0.1 + 0.2),
        world_size: 4,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same(a: &Checkpoint, b: &Checkpoint) {
    assert_eq!(bits(&a.params), bits(&b.params));
    assert_eq!(bits(&a.adam_m), bits(&b.adam_m));
    assert_eq!(bits(&a.adam_v), bits(&b.adam_v));
    assert_eq!(
        (a.adam_t, a.epoch, a.step, a.global_step, a.world_size),
        (b.adam_t, b.epoch, b.step, b.global_step, b.world_size)
    );
    assert_eq!(a.config, b.config);
    assert_eq!(a.dataset_fingerprint, b.dataset_fingerprint);
    assert_eq!(a.layout, b.layout);
    assert_eq!(
        a.best_metric.map(f64::to_bits),
        b.best_metric.map(f64::to_bits)
    );
}

fn load_err(path: &Path) -> String {
    Checkpoint::load(path).unwrap_err().to_string()
}

#[test]
fn round_trip_is_bit_identical() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.ssck");
    let ckpt = make_checkpoint(1234);
    ckpt.save(&path).unwrap();
    assert_same(&ckpt, &Checkpoint::load(&path).unwrap());

    let mut none = make_checkpoint(1);
    none.best_metric = None;
    none.save(&path).unwrap();
    assert_eq!(Checkpoint::load(&path).unwrap().best_metric, None);

    assert!(is_checkpoint(&path));
    assert!(!is_checkpoint(&dir.path().join("missing.ssck")));
    let text = summary(&path).unwrap();
    assert!(text.contains("global step 1"), "{text}");
    assert!(
        text.contains("sage0.w_self") && text.contains("[16, 8]"),
        "{text}"
    );
    assert!(text.contains("world size 4"), "{text}");
}

#[test]
fn truncated_corrupt_and_foreign_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.ssck");
    make_checkpoint(5).save(&path).unwrap();
    let good = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.ssck");

    // Truncated anywhere: inside the arrays, inside the digest, inside the header.
    for len in [good.len() - 1, good.len() - 40, good.len() / 2, 30, 12] {
        std::fs::write(&bad, &good[..len]).unwrap();
        let err = load_err(&bad);
        assert!(err.contains("truncated"), "len {len}: {err}");
        assert!(err.contains("bad.ssck"), "{err}");
    }

    // One flipped bit: in the header, in each array, in the digest.
    let header_pos = 30;
    for pos in [header_pos, good.len() / 2, good.len() - 100, good.len() - 1] {
        let mut bytes = good.clone();
        bytes[pos] ^= 0x04;
        std::fs::write(&bad, &bytes).unwrap();
        let err = load_err(&bad);
        assert!(err.contains("corrupt"), "byte {pos}: {err}");
    }

    // Extra bytes appended.
    let mut bytes = good.clone();
    bytes.extend_from_slice(b"xx");
    std::fs::write(&bad, &bytes).unwrap();
    assert!(load_err(&bad).contains("corrupt"));

    // Not a checkpoint at all, and an empty file.
    std::fs::write(&bad, b"{\"kind\":\"step\"}\n").unwrap();
    assert!(load_err(&bad).contains("not a shardsage checkpoint"));
    std::fs::write(&bad, b"").unwrap();
    assert!(load_err(&bad).contains("not a shardsage checkpoint"));
    // Missing file: an I/O error naming the path.
    assert!(load_err(&dir.path().join("missing.ssck")).contains("missing.ssck"));
}

#[test]
fn latest_good_skips_corrupt_newest_with_warning() {
    capture_logs();
    let dir = tempfile::tempdir().unwrap();
    let cd = CheckpointDir::new(dir.path().join("checkpoints")).unwrap();
    assert!(cd.latest_good().unwrap().is_none());
    for step in [10, 20, 30] {
        cd.save(&make_checkpoint(step), 5).unwrap();
    }
    let newest = cd.path_for(30);
    let mut bytes = std::fs::read(&newest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, &bytes).unwrap();

    let (path, ckpt) = cd.latest_good().unwrap().unwrap();
    assert_eq!(path, cd.path_for(20));
    assert_same(&ckpt, &make_checkpoint(20));
    let logged = LOGGED.lock().unwrap().clone();
    let name = newest.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        logged
            .iter()
            .any(|l| l.starts_with("WARN") && l.contains(&name) && l.contains("corrupt")),
        "{logged:?}"
    );

    // All corrupt: none.
    for step in [10, 20] {
        std::fs::write(cd.path_for(step), b"SSCKPT\r\n").unwrap();
    }
    assert!(cd.latest_good().unwrap().is_none());
}

#[test]
fn keep_last_prunes_but_never_deletes_best() {
    let dir = tempfile::tempdir().unwrap();
    let cd = CheckpointDir::new(dir.path()).unwrap();
    cd.save_best(&make_checkpoint(5)).unwrap();
    // A temp file left by a killed writer is cleaned up.
    let stale = dir.path().join(".ckpt-0000000001.ssck.tmp-4000000");
    std::fs::write(&stale, b"partial").unwrap();
    for step in (10..=60).step_by(10) {
        cd.save(&make_checkpoint(step), 2).unwrap();
    }
    let steps: Vec<u64> = cd.list().unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![50, 60]);
    assert_eq!(Checkpoint::load(&cd.best_path()).unwrap().global_step, 5);
    assert!(!stale.exists());
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["best.ssck", "ckpt-0000000050.ssck", "ckpt-0000000060.ssck"]
    );
    // best.ssck is overwritten in place.
    cd.save_best(&make_checkpoint(55)).unwrap();
    assert_eq!(Checkpoint::load(&cd.best_path()).unwrap().global_step, 55);
    assert!(cd.save(&make_checkpoint(70), 0).is_err());
}

#[test]
fn compatibility_errors_say_what_differs() {
    let ckpt = make_checkpoint(3);
    ckpt.check_compatible("sha256:abc123", &layout()).unwrap();
    let err = ckpt
        .check_compatible("sha256:other", &layout())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("another dataset") && err.contains("sha256:other"),
        "{err}"
    );
    let mut wider = layout();
    wider[0].shape = vec![32, 8];
    let err = ckpt
        .check_compatible("sha256:abc123", &wider)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("another model shape")
            && err.contains("sage0.w_self")
            && err.contains("[32, 8]"),
        "{err}"
    );
    let err = ckpt
        .check_compatible("sha256:abc123", &layout()[..1])
        .unwrap_err()
        .to_string();
    assert!(err.contains("2 tensors"), "{err}");
}

/// Child half of `failed_write_keeps_previous_file`: runs only when the parent sets the
/// variable. Limits this process's file size so the checkpoint write fails part-way.
#[test]
fn atomicity_child() {
    let Ok(target) = std::env::var("SHARDSAGE_TEST_ATOMIC_TARGET") else {
        return;
    };
    // SAFETY: plain libc calls on this process; SIGXFSZ ignored so the write returns EFBIG.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 4096,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let mut big = make_checkpoint(99);
    big.params = vec![1.5; 100_000];
    big.adam_m = vec![0.0; 100_000];
    big.adam_v = vec![0.0; 100_000];
    let err = big.save(Path::new(&target)).unwrap_err().to_string();
    println!("CHILD-ERROR: {err}");
}

#[test]
fn failed_write_keeps_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("best.ssck");
    let previous = make_checkpoint(7);
    previous.save(&target).unwrap();
    let before = std::fs::read(&target).unwrap();

    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "atomicity_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SHARDSAGE_TEST_ATOMIC_TARGET", &target)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("CHILD-ERROR"),
        "the write should have failed: {stdout}"
    );

    assert_eq!(
        std::fs::read(&target).unwrap(),
        before,
        "previous file changed"
    );
    assert_same(&Checkpoint::load(&target).unwrap(), &previous);
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "best.ssck")
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}
