//! The Kubernetes files in `k8s/`: every manifest passes the offline MPIJob validator
//! (`../shared/tools/validate-mpijob`: the CRD's schema made strict, the operator's admission
//! rules, Kubernetes' pod schemas); the MPIJobs' layouts add up (slotsPerWorker x workers = -np,
//! one rank per GPU); the Dockerfile and the manifests agree on the binary, the user, the SSH
//! server and its port; the CPU manifest differs from the GPU one only in its layout; and the
//! commands of the preparation job, the launcher and the evaluation job, with only their paths,
//! -np, hostfile, device and threads rewritten, run locally (the launcher under `mpirun -np 2`)
//! on a small generated graph, so their flags are the real CLI's.
//!
//! YAML is read with PyYAML through python3 (the validator needs python3 anyway): the system
//! python3 if it has PyYAML, else the validator's own virtual environment, which has it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_shardsage");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Where the project's checkout keeps the validator (beside the repository, in `shared/`).
const VALIDATOR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/tools/validate-mpijob"
);

/// The validator: `VALIDATE_MPIJOB` if set, else `../shared/tools/validate-mpijob` from the
/// crate root, else the first `shared/tools/validate-mpijob` in a directory above the crate
/// (a worktree may sit deeper than the main checkout). None when there is none.
fn validator() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VALIDATE_MPIJOB") {
        return Some(PathBuf::from(p));
    }
    std::iter::once(PathBuf::from(VALIDATOR))
        .chain(
            Path::new(ROOT)
                .ancestors()
                .map(|dir| dir.join("shared/tools/validate-mpijob")),
        )
        .find(|p| p.is_file())
}

fn k8s_dir() -> PathBuf {
    Path::new(ROOT).join("k8s")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every YAML file directly under k8s/, sorted.
fn yaml_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(k8s_dir())
        .expect("read k8s/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    files
}

/// A python3 that can `import yaml`.
fn python_with_yaml() -> PathBuf {
    let has_yaml = |python: &Path| {
        Command::new(python)
            .args(["-c", "import yaml"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let system = PathBuf::from("python3");
    if has_yaml(&system) {
        return system;
    }
    // The validator creates its venv (with PyYAML) on first use.
    let venv = std::env::var_os("VALIDATE_MPIJOB_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
                .map(|c| c.join("validate-mpijob-venv"))
        })
        .expect("neither VALIDATE_MPIJOB_VENV, XDG_CACHE_HOME nor HOME is set");
    let python = venv.join("bin/python");
    if let (false, Some(validator)) = (has_yaml(&python), validator()) {
        let _ = Command::new(validator).arg("--help").output();
    }
    assert!(
        has_yaml(&python),
        "no python3 with PyYAML (system or {})",
        python.display()
    );
    python
}

/// The documents of every YAML file under k8s/, as JSON values, keyed by file name. One python
/// process reads them all (each start costs a fraction of a second); the tests share the result.
fn manifests() -> &'static BTreeMap<String, Vec<Value>> {
    static PARSED: OnceLock<BTreeMap<String, Vec<Value>>> = OnceLock::new();
    PARSED.get_or_init(|| {
        let out = Command::new(python_with_yaml())
            .args([
                "-c",
                "import sys, os, json, yaml\n\
                 print(json.dumps({os.path.basename(p): [d for d in yaml.safe_load_all(open(p)) if d is not None] for p in sys.argv[1:]}))",
            ])
            .args(yaml_files())
            .output()
            .expect("run python3");
        assert!(out.status.success(), "cannot parse k8s/*.yaml: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("python printed JSON")
    })
}

/// The documents of one file under k8s/.
fn load_yaml(path: &Path) -> Vec<Value> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    manifests()
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("k8s/{name} not found"))
}

fn load_one(name: &str) -> Value {
    let docs = load_yaml(&k8s_dir().join(name));
    assert_eq!(docs.len(), 1, "{name} holds one document");
    docs.into_iter().next().unwrap_or_default()
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The value after `flag` in an argument list.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// command + args of a replica's first container.
fn container(job: &Value, replica: &str) -> Value {
    job["spec"]["mpiReplicaSpecs"][replica]["template"]["spec"]["containers"][0].clone()
}

fn command_line(c: &Value) -> Vec<String> {
    let mut line = str_list(&c["command"]);
    line.extend(str_list(&c["args"]));
    line
}

fn as_count(v: &Value) -> u64 {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or_else(|| panic!("not a count: {v}"))
}

fn mpijob_files() -> Vec<String> {
    let names: Vec<String> = yaml_files()
        .iter()
        .filter(|p| load_yaml(p).iter().any(|d| d["kind"] == "MPIJob"))
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .collect();
    assert!(
        names.contains(&"mpijob.yaml".to_string()),
        "k8s/mpijob.yaml holds no MPIJob"
    );
    names
}

#[test]
fn every_manifest_passes_the_mpijob_validator() {
    let files = yaml_files();
    assert!(
        files.len() >= 3,
        "expected mpijob.yaml, prepare-job.yaml and pvc.yaml in k8s/, found {files:?}"
    );
    let Some(validator) = validator() else {
        println!(
            "skipped: no validate-mpijob at {VALIDATOR} or above the crate (set VALIDATE_MPIJOB)"
        );
        return;
    };
    let out = Command::new("timeout")
        .arg("300")
        .arg(&validator)
        .args(&files)
        .output()
        .expect("run validate-mpijob");
    let report = text(&out);
    println!("{report}");
    assert!(out.status.success(), "validate-mpijob failed:\n{report}");
    for f in &files {
        assert!(
            report.contains(&format!("PASS {}#0", f.display())),
            "no PASS line for {}",
            f.display()
        );
    }
    assert!(
        !report.contains("warning"),
        "validate-mpijob warns:\n{report}"
    );
}

#[test]
fn mpijob_layouts_add_up() {
    for name in mpijob_files() {
        let job = load_one(&name);
        let spec = &job["spec"];
        let slots = as_count(&spec["slotsPerWorker"]);
        let workers = as_count(&spec["mpiReplicaSpecs"]["Worker"]["replicas"]);
        assert_eq!(
            as_count(&spec["mpiReplicaSpecs"]["Launcher"]["replicas"]),
            1
        );
        let line = command_line(&container(&job, "Launcher"));
        assert_eq!(line.first().map(String::as_str), Some("mpirun"), "{name}");
        let np: u64 = flag_value(&line, "-np")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no -np N on the mpirun line"));
        assert_eq!(
            slots * workers,
            np,
            "{name}: slotsPerWorker ({slots}) x Worker replicas ({workers}) != mpirun -np ({np})"
        );
        assert_eq!(
            flag_value(&line, "--hostfile"),
            Some("/etc/mpi/hostfile"),
            "{name}: mpirun must read the operator's hostfile"
        );
        assert_eq!(
            spec["launcherCreationPolicy"], "WaitForWorkersReady",
            "{name}"
        );
        assert!(
            as_count(&spec["runPolicy"]["backoffLimit"]) >= 1,
            "{name}: a failed launcher must be retried"
        );
        assert!(
            line.contains(&"--resume".to_string()),
            "{name}: retries must resume"
        );

        // One rank per GPU where the workers have GPUs.
        let worker = container(&job, "Worker");
        let gpus = &worker["resources"]["limits"]["nvidia.com/gpu"];
        let device = flag_value(&line, "--device").unwrap_or("auto");
        if gpus.is_null() {
            assert_ne!(
                device, "cuda",
                "{name}: --device cuda on workers without GPUs"
            );
        } else {
            assert_eq!(
                as_count(gpus),
                slots,
                "{name}: slotsPerWorker != GPUs per worker"
            );
            assert_eq!(
                device, "cuda",
                "{name}: GPU workers should train with --device cuda"
            );
            let tolerates = job["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]
                ["tolerations"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["key"] == "nvidia.com/gpu"));
            assert!(
                tolerates,
                "{name}: GPU workers need the nvidia.com/gpu toleration"
            );
        }

        // The data volume is mounted read-only where --data points, the runs volume where
        // --run-dir points, and /dev/shm is memory-backed.
        let mounts = worker["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mount_of = |path: &str| {
            mounts
                .iter()
                .filter(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("\u{0}")))
                .max_by_key(|m| m["mountPath"].as_str().map_or(0, str::len))
                .cloned()
                .unwrap_or_else(|| panic!("{name}: nothing mounted at {path}"))
        };
        let data = flag_value(&line, "--data").expect("--data");
        // Training writes its run directory; node2vec its checkpoints (and its output beside).
        let run_dir = flag_value(&line, "--run-dir")
            .or_else(|| flag_value(&line, "--checkpoint-dir"))
            .expect("--run-dir or --checkpoint-dir");
        assert_eq!(mount_of(data)["readOnly"], true, "{name}: parts read-only");
        assert_ne!(mount_of(run_dir)["readOnly"], true, "{name}: runs writable");
        let volumes = job["spec"]["mpiReplicaSpecs"]["Worker"]["template"]["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let shm_volume = mount_of("/dev/shm")["name"].clone();
        assert!(
            volumes
                .iter()
                .any(|v| v["name"] == shm_volume && v["emptyDir"]["medium"] == "Memory"),
            "{name}: /dev/shm must be a memory-backed emptyDir"
        );
        // Workers run sshd and wait until it answers.
        let port = worker["readinessProbe"]["tcpSocket"]["port"].clone();
        assert!(!port.is_null(), "{name}: readiness probe on the sshd port");
    }
}

#[test]
fn dockerfile_agrees_with_the_manifests() {
    let dockerfile =
        std::fs::read_to_string(k8s_dir().join("Dockerfile")).expect("read k8s/Dockerfile");
    // The last stage's COPY of the binary, its user, its CMD.
    let binary = dockerfile
        .lines()
        .find_map(|l| {
            l.strip_prefix("COPY --from=build /out/shardsage ")
                .map(str::trim)
        })
        .expect("Dockerfile copies /out/shardsage into the runtime image");
    let cmd_line = dockerfile
        .lines()
        .rev()
        .find(|l| l.starts_with("CMD ") || l.starts_with("ENTRYPOINT "))
        .expect("Dockerfile has a CMD or ENTRYPOINT");
    let cmd: Vec<String> = serde_json::from_str(cmd_line.split_once(' ').expect("CMD form").1)
        .expect("CMD/ENTRYPOINT in exec (JSON) form");
    assert_eq!(
        cmd.first().map(String::as_str),
        Some(binary),
        "CMD runs the binary"
    );
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("Dockerfile sets a USER");
    let uid: u64 = user
        .split(':')
        .next()
        .and_then(|u| u.trim().parse().ok())
        .expect("USER is a numeric uid");
    assert_eq!(uid, 1000, "the image runs as uid 1000, not root");
    // `useradd -m -u 1000 ... NAME`: the user whose home holds ~/.ssh and the sshd config.
    let user_name = dockerfile
        .lines()
        .find(|l| l.contains(&format!("useradd -m -u {uid}")))
        .and_then(|l| l.split_whitespace().last())
        .expect("Dockerfile creates the uid 1000 user with a home directory");
    let home = format!("/home/{user_name}");
    assert!(dockerfile.contains("openssh-server"), "workers need sshd");
    assert!(dockerfile.contains("openmpi-bin"), "launcher needs mpirun");
    let sshd_port: u64 = dockerfile
        .split("Port ")
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .next()
        .expect("sshd/ssh Port in the Dockerfile");

    for name in mpijob_files() {
        let job = load_one(&name);
        let spec = &job["spec"];
        let launcher = command_line(&container(&job, "Launcher"));
        assert!(
            launcher.iter().any(|a| a == binary),
            "{name}: the launcher runs {binary}, the binary the Dockerfile installs"
        );
        assert_eq!(
            spec["sshAuthMountPath"].as_str(),
            Some(format!("{home}/.ssh").as_str()),
            "{name}: sshAuthMountPath is the image user's ~/.ssh"
        );
        let worker = command_line(&container(&job, "Worker"));
        assert_eq!(
            worker.first().map(String::as_str),
            Some("/usr/sbin/sshd"),
            "{name}"
        );
        assert!(
            worker.iter().any(|a| a == "-De"),
            "{name}: sshd in the foreground"
        );
        let config = flag_value(&worker, "-f").expect("sshd -f CONFIG");
        assert!(
            dockerfile.contains(&format!("> {config}")),
            "{name}: the Dockerfile writes the sshd config {config}"
        );
        assert!(
            dockerfile.contains(&format!("HostKey {home}/.ssh/id_rsa")),
            "sshd's host key is the operator's key under sshAuthMountPath"
        );
        let probe = as_count(&container(&job, "Worker")["readinessProbe"]["tcpSocket"]["port"]);
        assert_eq!(probe, sshd_port, "{name}: readiness probe on sshd's port");
        for replica in ["Launcher", "Worker"] {
            let pod = &spec["mpiReplicaSpecs"][replica]["template"]["spec"];
            assert_eq!(
                as_count(&pod["securityContext"]["runAsUser"]),
                uid,
                "{name}: {replica} runs as the image's user"
            );
        }
    }

    // The preparation job uses the same binary and the claims pvc.yaml defines.
    let claims: Vec<String> = load_yaml(&k8s_dir().join("pvc.yaml"))
        .iter()
        .filter(|d| d["kind"] == "PersistentVolumeClaim")
        .filter_map(|d| d["metadata"]["name"].as_str().map(String::from))
        .collect();
    let prepare = load_one("prepare-job.yaml");
    let pod = &prepare["spec"]["template"]["spec"];
    assert!(
        command_line(&pod["containers"][0])
            .join(" ")
            .contains(binary),
        "prepare-job.yaml runs {binary}"
    );
    for name in std::iter::once("prepare-job.yaml".to_string()).chain(mpijob_files()) {
        let doc = load_one(&name);
        let text = doc.to_string();
        for claim in text.split("\"claimName\":\"").skip(1) {
            let claim = claim.split('"').next().unwrap_or_default();
            assert!(
                claims.iter().any(|c| c == claim),
                "{name} uses claim {claim}, which pvc.yaml does not define ({claims:?})"
            );
        }
    }
}

/// Removes the fields a CPU layout may change, so what is left must be equal.
fn without_layout(mut job: Value) -> Value {
    let spec = &mut job["spec"];
    spec["slotsPerWorker"] = Value::Null;
    spec["mpiReplicaSpecs"]["Worker"]["replicas"] = Value::Null;
    job["metadata"]["name"] = Value::Null;
    for replica in ["Launcher", "Worker"] {
        let pod = &mut job["spec"]["mpiReplicaSpecs"][replica]["template"]["spec"];
        pod["tolerations"] = Value::Null;
        let c = &mut pod["containers"][0];
        c["image"] = Value::Null;
        if replica == "Worker" {
            c["resources"] = Value::Null;
        } else if let Some(args) = c["args"].as_array_mut() {
            for flag in ["-np", "--device", "--threads", "--run-dir"] {
                if let Some(i) = args.iter().position(|a| a == flag) {
                    if i + 1 < args.len() {
                        args[i + 1] = Value::Null;
                    }
                }
            }
        }
    }
    job
}

#[test]
fn cpu_mpijob_differs_from_the_gpu_one_only_in_layout() {
    let gpu = load_one("mpijob.yaml");
    let cpu = load_one("mpijob-cpu.yaml");
    assert_eq!(
        without_layout(gpu),
        without_layout(cpu.clone()),
        "mpijob-cpu.yaml must match mpijob.yaml apart from names, image, ranks per worker, \
         device, threads and worker resources"
    );
    let line = command_line(&container(&cpu, "Launcher"));
    assert_eq!(flag_value(&line, "--device"), Some("cpu"));
}

/// The launcher's mpirun line of k8s/mpijob.yaml, with only what differs on this machine
/// rewritten: the binary's path, the volumes' paths, -np, the hostfile, and the device and
/// threads (no GPU, 2 cores here). Every training flag runs as written, on a 400-node graph made
/// by prepare-job.yaml's own script.
/// A stand-in for the cluster on this machine: the PVC's /data and /runs, the operator's
/// hostfile, and the image's binary, mapped to local paths.
struct LocalSite {
    data_root: PathBuf,
    runs_root: PathBuf,
    hostfile: PathBuf,
}

impl LocalSite {
    /// A manifest's path or argument as it is on this machine.
    fn local(&self, arg: &str) -> String {
        if arg == "/usr/local/bin/shardsage" {
            BIN.to_string()
        } else if arg == "/etc/mpi/hostfile" {
            self.hostfile.display().to_string()
        } else if let Some(rest) = arg.strip_prefix("/data/") {
            self.data_root.join(rest).display().to_string()
        } else if let Some(rest) = arg.strip_prefix("/runs/") {
            self.runs_root.join(rest).display().to_string()
        } else {
            arg.to_string()
        }
    }
}

/// Runs k8s/prepare-job.yaml's own script (image paths mapped to `root`, a small graph in 2
/// parts) and returns the site and the MPIJob launcher's command line, rewritten for it: 2
/// ranks on the CPU with one thread each.
fn prepare_site(root: &Path) -> (LocalSite, Vec<String>) {
    prepare_site_for(root, "mpijob.yaml")
}

/// [`prepare_site`] with the launcher command of MPIJob manifest `manifest`.
fn prepare_site_for(root: &Path, manifest: &str) -> (LocalSite, Vec<String>) {
    let job = load_one(manifest);
    let line = command_line(&container(&job, "Launcher"));
    let site = LocalSite {
        data_root: root.join("data"),
        runs_root: root.join("runs"),
        hostfile: root.join("hostfile"),
    };
    let data_root = &site.data_root;
    std::fs::create_dir_all(data_root).expect("data dir");

    // k8s/prepare-job.yaml's own script, with the image paths mapped to this machine and a
    // small graph (its NODES and PARTS variables) in 2 parts.
    let prepare = load_one("prepare-job.yaml");
    let prepare_container = &prepare["spec"]["template"]["spec"]["containers"][0];
    let mut prepare_line = command_line(prepare_container);
    let script = prepare_line.last_mut().expect("prepare-job has a command");
    *script = script
        .replace("/usr/local/bin/shardsage", BIN)
        .replace("/data/", &format!("{}/", data_root.display()));
    let mut prepare_cmd = Command::new("timeout");
    prepare_cmd.arg("300").args(&prepare_line);
    for var in prepare_container["env"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = var["name"].as_str().unwrap_or_default().to_string();
        let value = match name.as_str() {
            "NODES" => "400".to_string(),
            "PARTS" => "2".to_string(),
            _ => var["value"].as_str().unwrap_or_default().to_string(),
        };
        prepare_cmd.env(name, value);
    }
    let prepared = prepare_cmd.output().expect("run prepare-job's script");
    assert!(
        prepared.status.success(),
        "prepare-job.yaml's script failed:\n{}",
        text(&prepared)
    );
    let data_in_manifest = flag_value(&line, "--data").expect("--data").to_string();
    let local_parts = data_root.join(data_in_manifest.trim_start_matches("/data/"));
    assert!(
        local_parts.join("manifest.json").is_file(),
        "prepare-job.yaml wrote no {}/manifest.json",
        local_parts.display()
    );

    std::fs::write(&site.hostfile, "localhost slots=2\n").expect("write hostfile");
    let mut rewritten: Vec<String> = line.iter().map(|a| site.local(a)).collect();
    let np = rewritten.iter().position(|a| a == "-np").expect("-np") + 1;
    rewritten[np] = "2".into();
    // This machine has no GPU and 2 cores shared by both ranks.
    for (flag, value) in [("--device", "cpu"), ("--threads", "1")] {
        if let Some(i) = rewritten.iter().position(|a| a == flag) {
            rewritten[i + 1] = value.into();
        }
    }
    (site, rewritten)
}

/// The launcher's command line under `timeout`, with Open MPI set up for this machine.
fn launcher(line: &[String]) -> Command {
    let mut c = Command::new("timeout");
    c.arg("400")
        .args(line)
        .env("RUST_LOG", "info")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_pml", "ob1")
        .env("OMPI_MCA_btl", "self,vader")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1");
    c
}

#[test]
fn node2vec_mpijob_launcher_command_embeds_locally_and_a_retry_resumes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (site, line) = prepare_site_for(tmp.path(), "mpijob-node2vec.yaml");
    let out = PathBuf::from(flag_value(&line, "--out").expect("--out"));
    let embeddings = |p: &Path| -> Vec<f32> {
        let f = hdf5::File::open(p).expect("the embeddings file");
        f.dataset("embedding").unwrap().read_raw().unwrap()
    };
    // The uninterrupted run, into a directory of its own.
    let reference: Vec<String> = line
        .iter()
        .map(|a| a.replace("shardsage-node2vec", "uninterrupted"))
        .collect();
    println!("running: {}", reference.join(" "));
    let run = launcher(&reference).output().expect("run mpirun");
    let output = text(&run);
    assert!(
        run.status.success(),
        "the manifest's launcher command failed:\n{output}"
    );
    assert!(output.contains("test (dot product):"), "{output}");
    let want = embeddings(&site.runs_root.join("uninterrupted/embeddings.h5"));

    // The pods are told to stop (SIGTERM, as Kubernetes evicts) once the first training round
    // is reported: they checkpoint at a round end and exit 0; the operator's retry runs the
    // same command, which resumes and ends with the uninterrupted run's embeddings.
    let mut first = launcher(&line)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mpirun");
    let ranks = common::mpi::ranks_catching_sigterm(BIN, &out.display().to_string(), 2);
    let mut log = String::new();
    {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(first.stderr.take().expect("stderr")).lines();
        for l in lines.by_ref() {
            let l = l.expect("the launcher's log");
            log.push_str(&l);
            log.push('\n');
            if l.contains("epoch 1 round 1:") {
                for &pid in &ranks {
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
                break;
            }
        }
        for l in lines {
            log.push_str(&l.expect("the launcher's log"));
            log.push('\n');
        }
    }
    let stopped = first.wait().expect("wait for mpirun");
    assert!(stopped.success(), "{log}");
    assert!(
        log.contains("stopped by signal during node2vec training"),
        "{log}"
    );
    assert!(!out.exists(), "a stopped run writes no embeddings");
    let run = launcher(&line).output().expect("run mpirun");
    let output = text(&run);
    assert!(
        run.status.success() && output.contains("resumed from"),
        "{output}"
    );
    assert!(
        embeddings(&out)
            .iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "the retried launcher's embeddings differ from the uninterrupted run's"
    );
}

#[test]
fn mpijob_launcher_command_trains_locally_under_mpirun() {
    let job = load_one("mpijob.yaml");
    let line = command_line(&container(&job, "Launcher"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let (site, rewritten) = prepare_site(tmp.path());
    let run_dir = PathBuf::from(flag_value(&rewritten, "--run-dir").expect("--run-dir"));
    println!("running: {}", rewritten.join(" "));

    let started = std::time::Instant::now();
    let out = launcher(&rewritten).output().expect("run mpirun");
    let output = text(&out);
    assert!(
        out.status.success(),
        "the manifest's launcher command failed ({}):\n{output}",
        out.status
    );
    println!(
        "launcher command: {:.1} s with 2 ranks",
        started.elapsed().as_secs_f64()
    );
    let mrr: f64 = output
        .lines()
        .rev()
        .find_map(|l| l.split("final valid mrr=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("no 'final valid mrr=' line:\n{output}"));
    assert!(mrr > 0.0 && mrr <= 1.0, "final valid mrr {mrr}");
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics.jsonl");
    let epochs: u64 = flag_value(&line, "--epochs")
        .and_then(|e| e.parse().ok())
        .expect("--epochs");
    let evals = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["kind"] == "eval" && r["split"] == "valid")
        .count() as u64;
    assert!(
        evals >= 1 && evals <= epochs + 1,
        "{evals} validation records for {epochs} epochs"
    );
    assert!(run_dir.join("checkpoints/best.ssck").is_file());

    // k8s/eval-job.yaml's command on the trained run.
    let eval = load_one("eval-job.yaml");
    let eval_line: Vec<String> = command_line(&eval["spec"]["template"]["spec"]["containers"][0])
        .iter()
        .map(|a| site.local(a))
        .collect();
    let out = Command::new("timeout")
        .arg("300")
        .args(&eval_line)
        .output()
        .expect("run eval-job's command");
    assert!(
        out.status.success(),
        "eval-job.yaml's command failed: {}",
        text(&out)
    );
    assert!(
        text(&out).to_lowercase().contains("mrr"),
        "eval printed no MRR: {}",
        text(&out)
    );
}

/// What the MPI operator does when a worker pod is lost: mpirun fails, the launcher is retried
/// (runPolicy.backoffLimit) with the same command line, whose `--resume` continues from the
/// latest checkpoint. Here a rank is killed after two epochs and the same line is run again;
/// the final parameters equal an uninterrupted run's bit for bit.
#[test]
fn a_retried_launcher_after_a_lost_worker_resumes_to_the_uninterrupted_parameters() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (site, line) = prepare_site(tmp.path());
    let run_dir = PathBuf::from(flag_value(&line, "--run-dir").expect("--run-dir"));
    let at = line
        .iter()
        .position(|a| a == "--run-dir")
        .expect("--run-dir")
        + 1;
    let mut reference_line = line.clone();
    let reference_dir = site.runs_root.join("uninterrupted");
    reference_line[at] = reference_dir.display().to_string();
    let out = launcher(&reference_line).output().expect("run mpirun");
    assert!(out.status.success(), "{}", text(&out));

    let mut first = launcher(&line)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mpirun");
    // After the second epoch's validation (its checkpoint follows at once).
    let started = std::time::Instant::now();
    let evals = || {
        std::fs::read_to_string(run_dir.join("metrics.jsonl"))
            .map(|m| m.lines().filter(|l| l.contains(r#""kind":"eval""#)).count())
            .unwrap_or(0)
    };
    while evals() < 2 {
        assert!(started.elapsed().as_secs() < 120, "no second evaluation");
        assert!(
            first.try_wait().unwrap().is_none(),
            "the launcher ended early"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let run_dir_text = run_dir.display().to_string();
    let ranks = common::mpi::rank_pids(BIN, &run_dir_text);
    assert_eq!(ranks.len(), 2, "rank processes: {ranks:?}");
    // The lost pod.
    unsafe { libc::kill(ranks[1] as i32, libc::SIGKILL) };
    let killed = first.wait_with_output().expect("wait for mpirun");
    assert!(
        !killed.status.success(),
        "mpirun must fail when a rank is lost"
    );

    // The launcher's retry: the same command line.
    let retry = launcher(&line).output().expect("run mpirun");
    let retried = text(&retry);
    assert!(retry.status.success(), "{retried}");
    assert!(
        retried.contains("resuming from"),
        "the retry did not resume: {retried}"
    );
    let params = |dir: &Path| {
        shardsage::train::checkpoint::CheckpointDir::new(dir.join("checkpoints"))
            .unwrap()
            .latest_good()
            .unwrap()
            .expect("a checkpoint")
            .1
            .params
    };
    let (got, want) = (params(&run_dir), params(&reference_dir));
    assert!(
        got.len() == want.len()
            && got
                .iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
        "the retried run's parameters differ from the uninterrupted run's"
    );
}

/// The serving manifests' container: KServe's InferenceService and the plain Deployment.
fn serving_containers() -> Vec<(String, Value)> {
    let isvc = load_one("inferenceservice.yaml");
    let deploy = load_yaml(&k8s_dir().join("serve-deployment.yaml"));
    let deployment = deploy
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("serve-deployment.yaml has a Deployment");
    assert!(
        deploy.iter().any(|d| d["kind"] == "Service"
            && d["spec"]["ports"][0]["port"] == 8080
            && d["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]),
        "a Service on port 8080 selects the Deployment's pods"
    );
    vec![
        (
            "inferenceservice.yaml".into(),
            isvc["spec"]["predictor"]["containers"][0].clone(),
        ),
        (
            "serve-deployment.yaml".into(),
            deployment["spec"]["template"]["spec"]["containers"][0].clone(),
        ),
    ]
}

#[test]
fn the_serving_manifests_probe_the_v2_health_endpoints_and_their_command_serves_locally() {
    let isvc = load_one("inferenceservice.yaml");
    assert_eq!(isvc["apiVersion"], "serving.kserve.io/v1beta1");
    let kserve = &isvc["spec"]["predictor"]["containers"][0];
    assert_eq!(
        kserve["name"], "kserve-container",
        "KServe's custom container name"
    );
    let storage = kserve["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == "STORAGE_URI"))
        .and_then(|v| v["value"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        storage.starts_with("pvc://shardsage-runs/"),
        "the model from the training PVC: {storage}"
    );
    let dir = common::tmp("k8s", "serve");
    let parts = common::generated_parts(&dir, 600, 5, 8, 10, 2, None);
    let ckpt = common::train_small_model(&parts, &dir.join("run"), 1, 4);
    for (file, c) in serving_containers() {
        for (probe, path) in [
            ("readinessProbe", "/v2/health/ready"),
            ("livenessProbe", "/v2/health/live"),
        ] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{file}: {probe}");
            assert_eq!(c[probe]["httpGet"]["port"], 8080, "{file}: {probe}");
        }
        // The container's command with only the paths and the address rewritten for here.
        let line: Vec<String> = command_line(&c)
            .into_iter()
            .map(|a| {
                if a == "/usr/local/bin/shardsage" {
                    BIN.to_string()
                } else if a == "/data/parts" {
                    parts.display().to_string()
                } else if a.ends_with("/checkpoints/best.ssck") {
                    ckpt.display().to_string()
                } else if a == "0.0.0.0:8080" {
                    "127.0.0.1:0".to_string()
                } else {
                    a
                }
            })
            .collect();
        assert_eq!(line[1], "serve", "{file}: {line:?}");
        assert_eq!(
            flag_value(&line, "--address"),
            Some("127.0.0.1:0"),
            "{file}: listens on 0.0.0.0:8080"
        );
        let mut child = Command::new("timeout")
            .arg("120")
            .args(&line)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the manifest's serve command");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
        let addr = lines
            .find_map(|l| {
                l.ok()?
                    .strip_prefix("shardsage serve: listening on http://")
                    .map(String::from)
            })
            .unwrap_or_else(|| panic!("{file}: the server did not start"));
        let curl = |args: &[&str]| {
            Command::new("curl")
                .args(["-s", "--max-time", "10"])
                .args(args)
                .output()
                .expect("curl")
        };
        let t0 = std::time::Instant::now();
        while !curl(&["-f", &format!("http://{addr}/v2/health/ready")])
            .status
            .success()
        {
            assert!(t0.elapsed().as_secs() < 60, "{file}: not ready");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let name = flag_value(&line, "--name")
            .unwrap_or("citations")
            .to_string();
        let out = curl(&[
            "-f",
            "-H",
            "Content-Type: application/json",
            "-d",
            r#"{"inputs": [{"name": "paper", "datatype": "INT64", "shape": [1], "data": [3]}]}"#,
            &format!("http://{addr}/v2/models/{name}/infer"),
        ]);
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("{file}: {}", text(&out)));
        assert_eq!(
            v["outputs"][0]["shape"],
            serde_json::json!([1, 10]),
            "{file}: {v}"
        );
        // Kubernetes stops a pod with one SIGTERM: the server drains and exits 0. Sent to the
        // server itself (`timeout` would pass it on twice, and a second one exits at once).
        let pid = child.id();
        let server: i32 = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .ok()
            .and_then(|c| c.split_whitespace().next()?.parse().ok())
            .expect("the server under timeout");
        // SAFETY: signalling our own grandchild.
        unsafe { libc::kill(server, libc::SIGTERM) };
        let status = child.wait().expect("wait");
        assert!(status.success(), "{file}: {status:?}");
    }
}
