//! A full disk: every writer (`generate`, `partition`, training checkpoints) stops with an error
//! that names the file and the cause, leaves no temporary file behind, and keeps what was already
//! there intact. The disk is a small tmpfs mounted for the test; where mounting is not allowed
//! (no root, no CAP_SYS_ADMIN) the test prints why and skips.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{run, run_ok};

/// A tmpfs of `size` mounted at a fresh directory, unmounted on drop.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(name: &str, size: &str) -> Result<SmallDisk, String> {
        let dir = common::tmp("fulldisk", name);
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    names.sort();
    names
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn stderr_of(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "shardsage {args:?} should fail on a full disk"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_full_disk_fails_clearly_and_damages_nothing() {
    let disk = match SmallDisk::mount("disk", "1m") {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED a_full_disk_fails_clearly_and_damages_nothing: {why}");
            return;
        }
    };
    let d = disk.dir.clone();
    let s = |p: &Path| p.to_str().unwrap().to_string();

    // A small dataset fits; regenerating a large one over it does not, and the old one stays.
    let ds = d.join("ds.h5");
    run_ok(&[
        "generate",
        "--nodes",
        "300",
        "--seed",
        "1",
        "--feature-dim",
        "8",
        "--num-neg",
        "5",
        "--out",
        &s(&ds),
    ]);
    let before = std::fs::read(&ds).unwrap();
    let err = stderr_of(&[
        "generate",
        "--nodes",
        "20000",
        "--seed",
        "1",
        "--out",
        &s(&ds),
    ]);
    let target = format!(
        "cannot write {} (nothing at that path changed)",
        ds.display()
    );
    assert!(
        err.contains("No space left on device") && err.contains(&target),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&ds).unwrap(),
        before,
        "the existing dataset changed"
    );
    assert_eq!(files_in(&d), ["ds.h5"], "a temporary file was left behind");

    // Parts of a dataset that does not fit: no parts directory, nothing half-written.
    let elsewhere = common::tmp("fulldisk", "src");
    let big = elsewhere.join("big.h5");
    run_ok(&[
        "generate",
        "--nodes",
        "3000",
        "--seed",
        "1",
        "--feature-dim",
        "64",
        "--out",
        &s(&big),
    ]);
    let err = stderr_of(&[
        "partition",
        "--dataset",
        &s(&big),
        "--parts",
        "2",
        "--out-dir",
        &s(&d.join("parts")),
    ]);
    assert!(
        err.contains("No space left on device") && err.contains("part-"),
        "{err}"
    );
    assert_eq!(files_in(&d), ["ds.h5"], "partition left files behind");

    // Training whose checkpoints fill the disk: the failing write is named, the checkpoints
    // written before it still load, and no temporary file is left.
    std::fs::remove_file(&ds).unwrap();
    let parts = elsewhere.join("parts");
    run_ok(&[
        "partition",
        "--dataset",
        &s(&big),
        "--parts",
        "1",
        "--out-dir",
        &s(&parts),
    ]);
    let run_dir = d.join("run");
    let err = stderr_of(&[
        "train",
        "--data",
        &s(&parts),
        "--run-dir",
        &s(&run_dir),
        "--epochs",
        "4",
        "--steps-per-epoch",
        "2",
        "--hidden",
        "64",
        "--layers",
        "2",
        "--fanouts",
        "5,3",
        "--threads",
        "2",
    ]);
    assert!(
        err.contains("No space left on device") && err.contains(".ssck"),
        "{err}"
    );
    let names = files_in(&run_dir);
    assert!(
        !names.iter().any(|n| n.contains(".tmp-")),
        "temporary files left: {names:?}"
    );
    let ckpts =
        shardsage::train::checkpoint::CheckpointDir::new(run_dir.join("checkpoints")).unwrap();
    let (_, good) = ckpts
        .latest_good()
        .unwrap()
        .expect("the checkpoints written before the disk filled are readable");
    assert!(
        good.global_step >= 2,
        "latest good checkpoint at step {}",
        good.global_step
    );
}

#[test]
fn a_walk_file_that_does_not_fit_fails_clearly_and_keeps_the_old_one() {
    let disk = match SmallDisk::mount("walks", "1m") {
        Ok(d) => d,
        Err(why) => {
            eprintln!(
                "SKIPPED a_walk_file_that_does_not_fit_fails_clearly_and_keeps_the_old_one: {why}"
            );
            return;
        }
    };
    let d = disk.dir.clone();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let elsewhere = common::tmp("fulldisk", "walk-src");
    let ds = elsewhere.join("g.h5");
    run_ok(&[
        "generate",
        "--nodes",
        "3000",
        "--seed",
        "2",
        "--out",
        &s(&ds),
    ]);
    let parts = elsewhere.join("parts");
    run_ok(&[
        "partition",
        "--dataset",
        &s(&ds),
        "--parts",
        "1",
        "--out-dir",
        &s(&parts),
    ]);
    // A short walk file fits; ten walks of 40 per node (written round by round by the writer
    // thread) do not, and the short one stays as it was.
    let out = d.join("walks.h5");
    let walk = |per_node: &str, length: &str| -> Vec<String> {
        [
            "walk",
            "--data",
            &s(&parts),
            "--out",
            &s(&out),
            "--walks-per-node",
            per_node,
            "--length",
            length,
            "--threads",
            "2",
        ]
        .map(String::from)
        .to_vec()
    };
    let short = walk("1", "5");
    run_ok(&short.iter().map(String::as_str).collect::<Vec<_>>());
    let before = std::fs::read(&out).unwrap();
    let long = walk("10", "40");
    let err = stderr_of(&long.iter().map(String::as_str).collect::<Vec<_>>());
    let target = format!(
        "cannot write {} (nothing at that path changed)",
        out.display()
    );
    assert!(
        err.contains("No space left on device") && err.contains(&target),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&out).unwrap(),
        before,
        "the old walk file changed"
    );
    assert_eq!(
        files_in(&d),
        ["walks.h5"],
        "a temporary file was left behind"
    );
}
