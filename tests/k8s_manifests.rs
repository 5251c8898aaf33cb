//! The Kubernetes files in `k8s/`: every manifest passes the offline validator
//! (`../shared/tools/validate-mpijob`: the CRDs' schemas made strict, the controllers' admission
//! rules, Kubernetes' pod schemas), which rejects broken copies of the workflow and the Katib
//! experiment; the MPIJobs' layouts add up (slotsPerWorker x workers = -np, one rank per GPU);
//! the Dockerfile and the manifests agree on the binary, the user, the SSH server and its port;
//! the CPU manifest differs from the GPU one only in its layout, and the workflow's sweep jobs
//! and the Katib trials from `k8s/mpijob.yaml` only in what they sweep; and the commands of the
//! preparation job, the launcher, the evaluation job, the serving containers, the workflow's
//! steps (Argo's placeholders filled in, through select's output parameters) and a Katib trial
//! (its output read as Katib reads it), with only their paths, -np, hostfile, device and threads
//! rewritten, run locally (launchers under `mpirun -np 2`) on small generated graphs, so their
//! flags are the real CLI's.
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

/// The validator's report on `files` and whether every document passed; None (with a printed
/// skip) where there is no validator.
fn validate(files: &[PathBuf]) -> Option<(bool, String)> {
    let Some(validator) = validator() else {
        println!(
            "skipped: no validate-mpijob at {VALIDATOR} or above the crate (set VALIDATE_MPIJOB)"
        );
        return None;
    };
    let out = Command::new("timeout")
        .arg("300")
        .arg(&validator)
        .args(files)
        .output()
        .expect("run validate-mpijob");
    Some((out.status.success(), text(&out)))
}

/// The one warning the manifests may draw: Katib's default configuration lists only
/// `MPIJob.v1.kubeflow.org` as a trial resource, and k8s/katib-experiment.yaml's trials are
/// v2beta1 MPIJobs; docs/kubernetes.md says how to add it.
const KATIB_TRIAL_RESOURCE_WARNING: &str =
    "MPIJob.v2beta1.kubeflow.org must be added to its trialResources";

#[test]
fn every_manifest_passes_the_mpijob_validator() {
    let files = yaml_files();
    assert!(
        files.len() >= 3,
        "expected mpijob.yaml, prepare-job.yaml and pvc.yaml in k8s/, found {files:?}"
    );
    let Some((passed, report)) = validate(&files) else {
        return;
    };
    println!("{report}");
    assert!(passed, "validate-mpijob failed:\n{report}");
    for f in &files {
        assert!(
            report.contains(&format!("PASS {}#0", f.display())),
            "no PASS line for {}",
            f.display()
        );
    }
    for warning in report.lines().filter(|l| l.contains("warning")) {
        assert!(
            warning.contains(KATIB_TRIAL_RESOURCE_WARNING),
            "validate-mpijob warns:\n{report}"
        );
    }
    if report.contains(KATIB_TRIAL_RESOURCE_WARNING) {
        let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/kubernetes.md"))
            .expect("read docs/kubernetes.md");
        assert!(
            docs.contains("MPIJob.v2beta1.kubeflow.org") && docs.contains("trialResources"),
            "docs/kubernetes.md must say how to add MPIJob.v2beta1.kubeflow.org to Katib's \
             trialResources"
        );
    }
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

/// A stand-in for the cluster on this machine: the PVC's /data and /runs, the operator's
/// hostfile, and the image's binary, mapped to local paths.
struct LocalSite {
    data_root: PathBuf,
    runs_root: PathBuf,
    hostfile: PathBuf,
}

impl LocalSite {
    /// The site under `root`: `root/data`, `root/runs` and a hostfile of 2 local slots.
    fn new(root: &Path) -> LocalSite {
        let site = LocalSite {
            data_root: root.join("data"),
            runs_root: root.join("runs"),
            hostfile: root.join("hostfile"),
        };
        std::fs::create_dir_all(&site.data_root).expect("data dir");
        std::fs::create_dir_all(&site.runs_root).expect("runs dir");
        std::fs::write(&site.hostfile, "localhost slots=2\n").expect("write hostfile");
        site
    }

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

    /// A manifest's shell script with the image's binary and the volumes' paths in it mapped.
    fn local_script(&self, script: &str) -> String {
        script
            .replace("/usr/local/bin/shardsage", BIN)
            .replace("/data/", &format!("{}/", self.data_root.display()))
            .replace("/runs/", &format!("{}/", self.runs_root.display()))
    }

    /// Runs a preparation container's script (k8s/prepare-job.yaml's, or the workflow's prepare
    /// step) with the image paths mapped, its env as written but for `overrides`, and checks
    /// that it wrote /data/parts.
    fn prepare(&self, container: &Value, overrides: &[(&str, &str)]) {
        let mut line = command_line(container);
        let script = line.last_mut().expect("the preparation has a command");
        *script = self.local_script(script);
        let mut cmd = Command::new("timeout");
        cmd.arg("300").args(&line);
        for var in container["env"].as_array().cloned().unwrap_or_default() {
            let name = var["name"].as_str().unwrap_or_default().to_string();
            let value = overrides
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_else(|| var["value"].as_str().unwrap_or_default().to_string());
            cmd.env(name, value);
        }
        let prepared = cmd.output().expect("run the preparation script");
        assert!(
            prepared.status.success(),
            "the preparation script failed:\n{}",
            text(&prepared)
        );
        assert!(
            self.data_root.join("parts/manifest.json").is_file(),
            "the preparation wrote no /data/parts/manifest.json"
        );
    }

    /// An MPIJob's launcher command line as it runs here: paths mapped, -np 2 (2 ranks on the
    /// operator's hostfile of 2 local slots), and the device and threads of this machine (no GPU,
    /// 2 cores shared by both ranks). Every training flag as written.
    fn launcher_line(&self, job: &Value) -> Vec<String> {
        let line = command_line(&container(job, "Launcher"));
        let mut rewritten: Vec<String> = line.iter().map(|a| self.local(a)).collect();
        let np = rewritten.iter().position(|a| a == "-np").expect("-np") + 1;
        rewritten[np] = "2".into();
        for (flag, value) in [("--device", "cpu"), ("--threads", "1")] {
            if let Some(i) = rewritten.iter().position(|a| a == flag) {
                rewritten[i + 1] = value.into();
            }
        }
        rewritten
    }
}

/// Runs k8s/prepare-job.yaml's own script with the image paths mapped to `root` and a small
/// graph (its NODES and PARTS variables: 400 papers in 2 parts).
fn prepared_site(root: &Path) -> LocalSite {
    let site = LocalSite::new(root);
    let prepare = load_one("prepare-job.yaml");
    site.prepare(
        &prepare["spec"]["template"]["spec"]["containers"][0],
        &[("NODES", "400"), ("PARTS", "2")],
    );
    site
}

/// The launcher's mpirun line of k8s/mpijob.yaml on [`prepared_site`], with only what differs
/// on this machine rewritten ([`LocalSite::launcher_line`]): every training flag runs as
/// written, on a 400-node graph made by prepare-job.yaml's own script.
fn prepare_site(root: &Path) -> (LocalSite, Vec<String>) {
    prepare_site_for(root, "mpijob.yaml")
}

/// [`prepare_site`] with the launcher command of MPIJob manifest `manifest`.
fn prepare_site_for(root: &Path, manifest: &str) -> (LocalSite, Vec<String>) {
    let site = prepared_site(root);
    let job = load_one(manifest);
    let data = flag_value(&command_line(&container(&job, "Launcher")), "--data")
        .expect("--data")
        .to_string();
    assert_eq!(
        data, "/data/parts",
        "{manifest} trains on prepare-job.yaml's parts"
    );
    let line = site.launcher_line(&job);
    (site, line)
}

/// Runs `line` under `timeout SECONDS` and asserts it succeeded (the message names `what`).
fn run_ok_within(seconds: u32, line: &[String], what: &str) -> Output {
    let out = Command::new("timeout")
        .arg(seconds.to_string())
        .args(line)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(out.status.success(), "{what} failed:\n{}", text(&out));
    out
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
    // Its --run-dir holds the metrics `select` ranks a finished node2vec run by.
    let run_dir = flag_value(&line, "--run-dir").expect("--run-dir");
    let sel = Command::new(BIN)
        .args(["select", run_dir, "--json"])
        .output()
        .expect("run select");
    assert!(sel.status.success(), "{}", text(&sel));
    let sel: Value = serde_json::from_slice(&sel.stdout).expect("select --json");
    assert_eq!(sel["best"]["finished"], true, "{sel}");
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
    let out = run_ok_within(300, &eval_line, "eval-job.yaml's command");
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
        serve_until_ready_then_stop(&file, &line);
    }
}

/// Starts a serving container's command line (rewritten for here, listening on 127.0.0.1:0),
/// waits until `/v2/health/ready` answers 200, asks for one paper's top 10 (V2 infer), then
/// stops the server as Kubernetes stops a pod and expects it to exit 0.
fn serve_until_ready_then_stop(file: &str, line: &[String]) {
    let mut child = Command::new("timeout")
        .arg("120")
        .args(line)
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
    let name = flag_value(line, "--name")
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
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{file}: {}", text(&out)));
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

/// One YAML document given as text (an Argo resource template's manifest), as JSON.
fn yaml_text(yaml: &str) -> Value {
    python_json(
        &[
            "-c",
            "import sys, json, yaml\nprint(json.dumps(yaml.safe_load(sys.stdin)))",
        ],
        yaml,
    )
}

/// Runs `python3 ARGS` (the one with PyYAML) with `input` on stdin; asserts it succeeded.
fn python_with_input(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(python_with_yaml())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write to python3");
    let out = child.wait_with_output().expect("python3");
    assert!(
        out.status.success(),
        "python3 {args:?}: {}\n{input}",
        text(&out)
    );
    out
}

/// What `python3 ARGS` prints as JSON, given `input` on stdin.
fn python_json(args: &[&str], input: &str) -> Value {
    let out = python_with_input(args, input);
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

/// The name `argo submit --from workflowtemplate/shardsage-pipeline` gives a workflow: the
/// template's name, '-' and 5 random characters (its generateName).
const WORKFLOW_NAME: &str = "shardsage-pipeline-x7k2p";

/// What Argo does to a template before it runs it: every `{{name}}` of `values` replaced by its
/// value, in the template's JSON (values JSON-escaped, as Argo does). Panics naming a
/// placeholder that has no value.
fn argo_instantiate(template: &Value, values: &BTreeMap<String, String>) -> Value {
    let mut json = template.to_string();
    for (name, value) in values {
        let escaped = serde_json::to_string(value).expect("a string");
        json = json.replace(&format!("{{{{{name}}}}}"), &escaped[1..escaped.len() - 1]);
    }
    if let Some(at) = json.find("{{") {
        let end = json[at..].find("}}").map_or(json.len(), |e| at + e + 2);
        panic!("no value for {} in {template}", &json[at..end]);
    }
    serde_json::from_str(&json).expect("the instantiated template is JSON")
}

/// The workflow's global values: `workflow.name` ([`WORKFLOW_NAME`]) and its parameters'
/// defaults, those in `overrides` as a user passes them (`argo submit -p name=value`).
fn workflow_values(wf: &Value, overrides: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut values = BTreeMap::from([("workflow.name".to_string(), WORKFLOW_NAME.to_string())]);
    for p in wf["spec"]["arguments"]["parameters"]
        .as_array()
        .expect("the workflow's parameters")
    {
        let name = p["name"].as_str().expect("a parameter's name");
        let value = overrides
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| p["value"].as_str().unwrap_or_default().to_string());
        values.insert(format!("workflow.parameters.{name}"), value);
    }
    for (name, _) in overrides {
        assert!(
            values.contains_key(&format!("workflow.parameters.{name}")),
            "the workflow has no parameter {name}"
        );
    }
    values
}

/// The workflow's template `name`.
fn argo_template<'a>(wf: &'a Value, name: &str) -> &'a Value {
    wf["spec"]["templates"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("the workflow has no template {name}"))
}

/// The task `name` of the workflow's entrypoint DAG.
fn dag_task<'a>(wf: &'a Value, name: &str) -> &'a Value {
    let entry = wf["spec"]["entrypoint"].as_str().expect("an entrypoint");
    argo_template(wf, entry)["dag"]["tasks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("the workflow's DAG has no task {name}"))
}

/// A DAG task's arguments as its template sees them (`inputs.parameters.<name>`), with `ctx`
/// (the workflow's values, `item.*`, `tasks.<task>.outputs.parameters.*`) substituted.
fn task_inputs(task: &Value, ctx: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let args = argo_instantiate(&task["arguments"], ctx);
    args["parameters"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            (
                format!(
                    "inputs.parameters.{}",
                    p["name"].as_str().unwrap_or_default()
                ),
                p["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// The workflow's grid (its `grid` parameter's value), one JSON object per training run.
fn grid(values: &BTreeMap<String, String>) -> Vec<Value> {
    serde_json::from_str(&values["workflow.parameters.grid"]).expect("the grid is a JSON list")
}

/// The MPIJob the workflow's train step creates for grid point `item` on retry `retry`.
fn sweep_job(wf: &Value, values: &BTreeMap<String, String>, item: &Value, retry: u64) -> Value {
    let task = dag_task(wf, "train");
    assert_eq!(
        task["withParam"], "{{workflow.parameters.grid}}",
        "one training run per grid item"
    );
    let mut ctx = values.clone();
    for (k, v) in item.as_object().expect("a grid item is an object") {
        ctx.insert(
            format!("item.{k}"),
            v.as_str().map_or_else(|| v.to_string(), String::from),
        );
    }
    let mut local = values.clone();
    local.extend(task_inputs(task, &ctx));
    local.insert("retries".into(), retry.to_string());
    let train = argo_instantiate(argo_template(wf, "train"), &local);
    yaml_text(
        train["resource"]["manifest"]
            .as_str()
            .expect("the train step's manifest"),
    )
}

/// An MPIJob with what a sweep sets per run blanked: its metadata, its launcher retries, its
/// images, and the flags a grid point or a Katib trial sets (--run-dir, --hidden, --lr,
/// --fanouts, taken out with their values). What is left is the job k8s/mpijob.yaml runs.
fn without_sweep_fields(mut job: Value) -> Value {
    const SWEPT: [&str; 4] = ["--run-dir", "--hidden", "--lr", "--fanouts"];
    job["metadata"] = Value::Null;
    job["spec"]["runPolicy"]["backoffLimit"] = Value::Null;
    for replica in ["Launcher", "Worker"] {
        let c = &mut job["spec"]["mpiReplicaSpecs"][replica]["template"]["spec"]["containers"][0];
        c["image"] = Value::Null;
        if let Some(args) = c["args"].as_array_mut() {
            let mut kept = Vec::new();
            let mut it = args.iter();
            while let Some(a) = it.next() {
                if SWEPT.contains(&a.as_str().unwrap_or_default()) {
                    it.next();
                } else {
                    kept.push(a.clone());
                }
            }
            *args = kept;
        }
    }
    job
}

/// A DNS-1035 label: what the operator's host names for a job's pods must be.
fn is_dns1035_label(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Whether `condition` is one requirement Argo can read: it parses a resource template's
/// success and failure conditions as a Kubernetes label selector (`key op value`), the key a
/// label key (here a dotted field path of at most 63 characters), the values label values.
fn is_argo_condition(condition: &str) -> bool {
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let Some((key, rest)) = condition.split_once(' ') else {
        return false;
    };
    let values: Vec<&str> = if let Some(set) = rest
        .strip_prefix("in (")
        .or_else(|| rest.strip_prefix("notin ("))
    {
        match set.strip_suffix(')') {
            Some(set) => set.split(',').map(str::trim).collect(),
            None => return false,
        }
    } else {
        match rest.split_once(' ') {
            Some((op, value)) if ["==", "=", "!=", ">", "<"].contains(&op) => vec![value],
            _ => return false,
        }
    };
    label(key) && values.iter().all(|v| label(v))
}

/// The claims k8s/pvc.yaml defines.
fn pvc_claims() -> Vec<String> {
    load_yaml(&k8s_dir().join("pvc.yaml"))
        .iter()
        .filter(|d| d["kind"] == "PersistentVolumeClaim")
        .filter_map(|d| d["metadata"]["name"].as_str().map(String::from))
        .collect()
}

/// The claims a document mounts.
fn claims_of(doc: &Value) -> Vec<String> {
    let text = doc.to_string();
    text.split("\"claimName\":\"")
        .skip(1)
        .filter_map(|c| c.split('"').next().map(String::from))
        .collect()
}

#[test]
fn the_workflow_sweep_runs_mpijob_yaml_and_a_retried_step_resumes_in_the_same_run_directory() {
    let wf = load_one("workflow.yaml");
    assert_eq!(wf["kind"], "WorkflowTemplate");
    let name = wf["metadata"]["name"].as_str().expect("a name");
    assert!(
        WORKFLOW_NAME.len() == name.len() + 6 && WORKFLOW_NAME.starts_with(&format!("{name}-")),
        "argo submit --from names a workflow <template>-<5 characters>"
    );
    assert_eq!(wf["spec"]["serviceAccountName"], "shardsage-workflow");
    let rbac = load_yaml(&k8s_dir().join("workflow-rbac.yaml"));
    assert!(
        rbac.iter()
            .any(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == "shardsage-workflow"),
        "k8s/workflow-rbac.yaml defines the workflow's service account"
    );

    // The steps run in the order the local run below follows.
    for (task, after) in [
        ("train", "prepare"),
        ("select", "train"),
        ("eval", "select"),
        ("serve", "eval"),
    ] {
        let deps = str_list(&dag_task(&wf, task)["dependencies"]);
        assert!(
            deps.iter().any(|d| d == after),
            "{task} must wait for {after}"
        );
    }
    // The prepare step is k8s/prepare-job.yaml's script.
    let prepare_job = load_one("prepare-job.yaml");
    assert_eq!(
        command_line(&argo_template(&wf, "prepare")["container"]),
        command_line(&prepare_job["spec"]["template"]["spec"]["containers"][0]),
        "the workflow's prepare step and k8s/prepare-job.yaml run the same script"
    );

    let train = argo_template(&wf, "train");
    let resource = &train["resource"];
    assert_eq!(resource["action"], "create");
    assert_eq!(resource["setOwnerReference"], true);
    assert_eq!(
        resource["successCondition"],
        "status.replicaStatuses.Launcher.succeeded > 0"
    );
    for step in ["train", "serve"] {
        let resource = &argo_template(&wf, step)["resource"];
        for condition in ["successCondition", "failureCondition"] {
            let text = resource[condition].as_str().unwrap_or_default();
            assert!(
                is_argo_condition(text),
                "{step}.{condition} {text:?}: Argo reads a condition as a label selector whose \
                 keys are field paths (no gjson queries)"
            );
        }
    }
    let limit = as_count(&train["retryStrategy"]["limit"]);
    assert!(limit >= 1, "a failed training step is retried");

    let values = workflow_values(&wf, &[]);
    let items = grid(&values);
    assert!(items.len() >= 2, "the default grid trains several runs");
    let reference = without_sweep_fields(load_one("mpijob.yaml"));
    let claims = pvc_claims();
    for item in &items {
        let point = item["name"].as_str().expect("a grid point's name");
        let mut names = std::collections::BTreeSet::new();
        let mut run_dirs = std::collections::BTreeSet::new();
        for retry in 0..=limit {
            let job = sweep_job(&wf, &values, item, retry);
            let job_name = job["metadata"]["name"].as_str().expect("the job's name");
            let workers = as_count(&job["spec"]["mpiReplicaSpecs"]["Worker"]["replicas"]);
            for host in [
                format!("{job_name}-worker-{}", workers - 1),
                format!("{job_name}-launcher"),
            ] {
                assert!(
                    is_dns1035_label(&host),
                    "grid point {point:?}: the operator's name {host:?} is no DNS-1035 label \
                     of at most 63 characters"
                );
            }
            let line = command_line(&container(&job, "Launcher"));
            assert!(line.iter().any(|a| a == "--resume"), "retries must resume");
            run_dirs.insert(
                flag_value(&line, "--run-dir")
                    .expect("--run-dir")
                    .to_string(),
            );
            names.insert(job_name.to_string());
            // The launcher Job fails once backoffLimit retries have failed: the step's failure
            // condition must be that, not a first failed attempt the Job still retries.
            let backoff = as_count(&job["spec"]["runPolicy"]["backoffLimit"]);
            assert_eq!(
                resource["failureCondition"],
                format!("status.replicaStatuses.Launcher.failed > {backoff}"),
                "the step fails when the job's launcher has run out of retries"
            );
            assert_eq!(
                without_sweep_fields(job.clone()),
                reference,
                "the sweep's MPIJob must be k8s/mpijob.yaml's but for its name, retries, \
                 image, run directory and swept flags"
            );
            for claim in claims_of(&job) {
                assert!(claims.contains(&claim), "claim {claim} is not in pvc.yaml");
            }
        }
        assert_eq!(
            names.len() as u64,
            limit + 1,
            "every retry creates an MPIJob of its own: {names:?}"
        );
        assert_eq!(
            run_dirs.into_iter().collect::<Vec<_>>(),
            [format!("/runs/{WORKFLOW_NAME}/sweep/{point}")],
            "every retry trains in the grid point's run directory"
        );
    }
}

/// The workflow's steps, as Argo would run them, on this machine: the prepare step's script on
/// a 500-paper graph in 2 parts, the training MPIJob's launcher line for the first two grid
/// points under `mpirun -np 2`, the select step's script (whose output parameters the next
/// steps get), the eval step's command on the chosen checkpoint and the InferenceService's
/// serve command on the chosen run's directory. The workflow's parameters are its defaults but
/// for those a user passes with `argo submit -p` (nodes, parts, epochs: small and short here);
/// in the commands only the paths, -np, the hostfile, the device and threads are rewritten
/// ([`LocalSite`]).
#[test]
fn the_workflow_runs_locally_prepare_sweep_select_eval_serve() {
    let wf = load_one("workflow.yaml");
    let tmp = tempfile::tempdir().expect("tempdir");
    let site = LocalSite::new(tmp.path());
    let values = workflow_values(&wf, &[("nodes", "500"), ("parts", "2"), ("epochs", "2")]);

    site.prepare(
        &argo_template_instance(&wf, "prepare", &values, &BTreeMap::new())["container"],
        &[],
    );

    let started = std::time::Instant::now();
    let points: Vec<Value> = grid(&values).into_iter().take(2).collect();
    let mut best_by_run = Vec::new();
    for item in &points {
        let line = site.launcher_line(&sweep_job(&wf, &values, item, 0));
        let out = launcher(&line).output().expect("run mpirun");
        assert!(
            out.status.success(),
            "grid point {item}: the launcher command failed:\n{}",
            text(&out)
        );
        let run_dir = PathBuf::from(flag_value(&line, "--run-dir").expect("--run-dir"));
        let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics");
        let end: Value = metrics
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|r| r["kind"] == "end")
            .unwrap_or_else(|| panic!("{}: no end record", run_dir.display()));
        best_by_run.push((run_dir, end["best_valid"].as_f64().expect("best_valid")));
    }
    println!(
        "two grid points trained in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // select: its script, with the output parameters' files under a local directory.
    let outputs = tmp.path().join("outputs");
    std::fs::create_dir_all(&outputs).expect("outputs dir");
    let select = argo_template_instance(&wf, "select", &values, &BTreeMap::new());
    let local_outputs = |p: &str| p.replace("/tmp/outputs", &outputs.display().to_string());
    let mut select_line = command_line(&select["container"]);
    let script = select_line.last_mut().expect("select has a script");
    *script = local_outputs(&site.local_script(script));
    run_ok_within(120, &select_line, "the select step");
    let mut ctx = values.clone();
    for p in select["outputs"]["parameters"].as_array().expect("outputs") {
        let path = local_outputs(p["valueFrom"]["path"].as_str().expect("valueFrom.path"));
        let value = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("select wrote no output parameter file {path}: {e}"));
        ctx.insert(
            format!(
                "tasks.select.outputs.parameters.{}",
                p["name"].as_str().unwrap()
            ),
            value,
        );
    }
    let checkpoint = ctx["tasks.select.outputs.parameters.checkpoint"].clone();
    let run_dir = ctx["tasks.select.outputs.parameters.run-dir"].clone();
    let best = best_by_run.iter().map(|(_, v)| *v).fold(f64::MIN, f64::max);
    let (chosen, chosen_value) = best_by_run
        .iter()
        .find(|(dir, _)| dir.join("checkpoints/best.ssck").display().to_string() == checkpoint)
        .unwrap_or_else(|| panic!("select chose {checkpoint:?}, not one of {best_by_run:?}"));
    assert_eq!(
        *chosen_value, best,
        "select chose {chosen:?} of {best_by_run:?}"
    );
    assert!(
        Path::new(&run_dir).is_relative() && site.runs_root.join(&run_dir) == *chosen,
        "the run-dir output {run_dir:?} must be the chosen run's directory relative to the runs \
         volume"
    );
    assert!(site
        .runs_root
        .join(format!("{WORKFLOW_NAME}/select.json"))
        .is_file());

    // eval: the chosen checkpoint on the test split.
    let eval = argo_template_instance(
        &wf,
        "eval",
        &values,
        &task_inputs(dag_task(&wf, "eval"), &ctx),
    );
    let eval_line: Vec<String> = command_line(&eval["container"])
        .iter()
        .map(|a| site.local(a))
        .collect();
    assert_eq!(
        flag_value(&eval_line, "--checkpoint"),
        Some(checkpoint.as_str())
    );
    run_ok_within(300, &eval_line, "the eval step");
    let test_metrics: Value = serde_json::from_str(
        &std::fs::read_to_string(flag_value(&eval_line, "--json").expect("--json"))
            .expect("the eval step's --json file"),
    )
    .expect("JSON");
    assert_eq!(test_metrics["split"], "test");
    let mrr = test_metrics["metrics"]["mrr"].as_f64().expect("test mrr");
    assert!(mrr > 0.0 && mrr <= 1.0, "test mrr {mrr}");

    // serve: the InferenceService's container on the chosen run, where KServe mounts it.
    let serve = argo_template_instance(
        &wf,
        "serve",
        &values,
        &task_inputs(dag_task(&wf, "serve"), &ctx),
    );
    assert_eq!(serve["resource"]["action"], "apply");
    let isvc = yaml_text(serve["resource"]["manifest"].as_str().expect("a manifest"));
    assert_eq!(isvc["kind"], "InferenceService");
    let kserve = &isvc["spec"]["predictor"]["containers"][0];
    assert_eq!(kserve["name"], "kserve-container");
    let storage = kserve["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == "STORAGE_URI"))
        .and_then(|v| v["value"].as_str())
        .expect("STORAGE_URI")
        .to_string();
    let (claim, path) = storage
        .strip_prefix("pvc://")
        .and_then(|s| s.split_once('/'))
        .unwrap_or_else(|| panic!("not a pvc:// URI: {storage}"));
    assert_eq!(claim, "shardsage-runs", "the model from the runs volume");
    assert_eq!(path, run_dir, "the model is the chosen run");
    let models = site.runs_root.join(path);
    let line: Vec<String> = command_line(kserve)
        .iter()
        .map(|a| {
            if let Some(rest) = a.strip_prefix("/mnt/models/") {
                models.join(rest).display().to_string()
            } else if a == "0.0.0.0:8080" {
                "127.0.0.1:0".to_string()
            } else {
                site.local(a)
            }
        })
        .collect();
    assert_eq!(
        flag_value(&line, "--checkpoint"),
        Some(checkpoint.as_str()),
        "the service serves the chosen checkpoint"
    );
    serve_until_ready_then_stop("workflow.yaml (serve)", &line);
}

/// The workflow's template `name` as Argo runs it: the workflow's `values` and the step's
/// `inputs` substituted.
fn argo_template_instance(
    wf: &Value,
    name: &str,
    values: &BTreeMap<String, String>,
    inputs: &BTreeMap<String, String>,
) -> Value {
    let mut all = values.clone();
    all.extend(inputs.iter().map(|(k, v)| (k.clone(), v.clone())));
    argo_instantiate(argo_template(wf, name), &all)
}

/// Katib's StdOut collector's default filter (metricsFormat), as Katib writes it.
const KATIB_DEFAULT_FILTER: &str = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)";

/// The (name, value) pairs Katib's file-metrics-collector takes from a training container's
/// output (stdout and stderr, which its wrapper sends to the collector's file), as its text
/// parser does: lines that contain a metric's name, every match of the filter in them, kept when
/// the name is one of `metrics`. Python's `re` with ASCII classes, as Go's RE2.
fn katib_observations(output: &str, metrics: &[String]) -> Vec<(String, String)> {
    let script = "import sys, re, json\n\
                  pattern, metrics = re.compile(sys.argv[1], re.ASCII), sys.argv[2:]\n\
                  found = []\n\
                  for line in sys.stdin.read().split('\\n'):\n\
                  \x20   if not any(m in line for m in metrics):\n\
                  \x20       continue\n\
                  \x20   for m in pattern.finditer(line):\n\
                  \x20       name, value = m.group(1).strip(), m.group(2).strip()\n\
                  \x20       if name in metrics:\n\
                  \x20           found.append([name, value])\n\
                  print(json.dumps(found))";
    let mut args = vec!["-c", script, KATIB_DEFAULT_FILTER];
    args.extend(metrics.iter().map(|m| m.as_str()));
    serde_json::from_value(python_json(&args, output)).expect("[name, value] pairs")
}

/// A Katib trial of k8s/katib-experiment.yaml on this machine: its trialSpec with the trial
/// parameters replaced as Katib replaces them (sample values from each parameter's feasible
/// space, and a trial name), its launcher line run under `mpirun -np 2` on prepare-job.yaml's
/// parts the way Katib's webhook wraps it (one `sh -c` line, output to the collector's file),
/// and that file read as Katib's StdOut collector reads it: the objective `valid-mrr` is there,
/// at every evaluation, and its best value is the run's best validation MRR.
#[test]
fn the_katib_trial_runs_mpijob_yaml_and_reports_valid_mrr_the_way_katib_parses_it() {
    let exp = load_one("katib-experiment.yaml");
    let spec = &exp["spec"];
    assert_eq!(spec["objective"]["type"], "maximize");
    let objective = spec["objective"]["objectiveMetricName"]
        .as_str()
        .expect("objectiveMetricName")
        .to_string();
    assert_eq!(objective, "valid-mrr");
    let mut metrics = vec![objective.clone()];
    metrics.extend(str_list(&spec["objective"]["additionalMetricNames"]));
    let collector = spec["metricsCollectorSpec"]["collector"]["kind"]
        .as_str()
        .unwrap_or("StdOut");
    assert_eq!(collector, "StdOut");
    assert_eq!(spec["earlyStopping"]["algorithmName"], "medianstop");
    let template = &spec["trialTemplate"];
    assert_eq!(
        template["primaryPodLabels"]["training.kubeflow.org/job-role"], "launcher",
        "metrics come from the launcher pod"
    );

    // Katib's substitution: each trial parameter's placeholder replaced in the serialised
    // trialSpec by the trial's value (here: a double's midpoint, a list's first item).
    let trial_name = "shardsage-sweep-7x2kq9lm";
    let mut spec_text = template["trialSpec"].to_string();
    for tp in template["trialParameters"]
        .as_array()
        .expect("trialParameters")
    {
        let reference = tp["reference"].as_str().expect("a reference");
        let value = if reference == "${trialSpec.Name}" {
            trial_name.to_string()
        } else {
            let p = spec["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == reference))
                .unwrap_or_else(|| panic!("no parameter {reference}"));
            let space = &p["feasibleSpace"];
            match p["parameterType"].as_str() {
                Some("double") => {
                    let bound = |b: &str| -> f64 {
                        space[b]
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .expect("a bound")
                    };
                    format!("{}", (bound("min") + bound("max")) / 2.0)
                }
                _ => str_list(&space["list"]).first().cloned().expect("a list"),
            }
        };
        let placeholder = format!("${{trialParameters.{}}}", tp["name"].as_str().unwrap());
        assert!(spec_text.contains(&placeholder), "{placeholder} unused");
        spec_text = spec_text.replace(&placeholder, &value);
    }
    assert!(!spec_text.contains("${trialParameters."), "{spec_text}");
    let job: Value = serde_json::from_str(&spec_text).expect("the trialSpec");
    assert_eq!(
        without_sweep_fields(job.clone()),
        without_sweep_fields(load_one("mpijob.yaml")),
        "a trial must be k8s/mpijob.yaml's job but for its name, image, run directory and \
         swept flags"
    );
    let launcher_container = container(&job, "Launcher");
    assert_eq!(
        template["primaryContainerName"], launcher_container["name"],
        "the primary container is the launcher's"
    );
    assert!(
        !str_list(&launcher_container["command"]).is_empty(),
        "Katib wraps the primary container's command to collect its output"
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let site = prepared_site(tmp.path());
    let mut line = site.launcher_line(&job);
    let run_dir = PathBuf::from(flag_value(&line, "--run-dir").expect("--run-dir"));
    assert_eq!(run_dir, site.runs_root.join(format!("katib/{trial_name}")));
    // Rewritten for time: 2 epochs instead of the manifest's 10 (two evaluations to read).
    let epochs = line.iter().position(|a| a == "--epochs").expect("--epochs") + 1;
    line[epochs] = "2".into();
    // As Katib's webhook wraps the primary container: its command and arguments joined by
    // spaces into one `sh -c` line, the output of both streams to the collector's file, a
    // completion mark beside it (Kubernetes turns the manifest's `$$$$` into `$$`).
    let katib_dir = tmp.path().join("katib");
    std::fs::create_dir_all(&katib_dir).expect("the collector's directory");
    let log = katib_dir.join("metrics.log");
    let wrapped = format!(
        "{} 1>{} 2>&1 && echo completed > {}/$$.pid",
        line.join(" "),
        log.display(),
        katib_dir.display()
    );
    let out = launcher(&["sh".into(), "-c".into(), wrapped])
        .output()
        .expect("run the wrapped launcher");
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "the trial's launcher failed:\n{}{output}",
        text(&out)
    );
    let marks = std::fs::read_dir(&katib_dir)
        .expect("the collector's directory")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
        .count();
    assert_eq!(marks, 1, "the wrapped command did not complete");

    let found = katib_observations(&output, &metrics);
    let values: Vec<f64> = found
        .iter()
        .filter(|(name, _)| *name == objective)
        .map(|(_, v)| {
            v.parse()
                .unwrap_or_else(|_| panic!("Katib could not read {objective}={v:?}"))
        })
        .collect();
    assert_eq!(
        values.len(),
        2,
        "one {objective} per evaluation: {found:?}\n{output}"
    );
    assert!(
        values.iter().all(|v| *v > 0.0 && *v <= 1.0),
        "{objective} values {values:?}"
    );
    for m in &metrics {
        assert!(
            found.iter().any(|(name, _)| name == m),
            "no {m} in the output: {found:?}"
        );
    }
    // The objective's strategy is max: the trial's value is its best evaluation, the one
    // checkpoints/best.ssck holds and `shardsage select` ranks by.
    let strategy = spec["objective"]["metricStrategies"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == objective))
        .and_then(|s| s["value"].as_str())
        .unwrap_or_default();
    assert_eq!(strategy, "max");
    let best_valid = std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["kind"] == "end")
        .and_then(|r| r["best_valid"].as_f64())
        .expect("an end record with best_valid");
    let katib_value = values.iter().copied().fold(f64::MIN, f64::max);
    assert!(
        (katib_value - best_valid).abs() < 1e-6,
        "Katib's {objective} {katib_value} != the run's best validation MRR {best_valid}"
    );
}

/// Writes `doc` to `path` as YAML as a person writes it: block style, multi-line strings (an
/// embedded manifest, a script) as literal blocks.
fn write_yaml(path: &Path, doc: &Value) {
    let script = "import sys, json, yaml\n\
                  def text(dumper, s):\n\
                  \x20   style = '|' if '\\n' in s else None\n\
                  \x20   return dumper.represent_scalar('tag:yaml.org,2002:str', s, style=style)\n\
                  yaml.SafeDumper.add_representer(str, text)\n\
                  yaml.safe_dump(json.load(sys.stdin), open(sys.argv[1], 'w'), width=1000)";
    let path = path.to_str().expect("a UTF-8 path");
    python_with_input(&["-c", script, path], &doc.to_string());
}

/// Where the validator reports document 0 of `path` failed, its error lines.
fn failures_of(report: &str, path: &Path) -> Option<String> {
    let head = format!("FAIL {}#0", path.display());
    let mut lines = report.lines().skip_while(|l| !l.starts_with(&head));
    lines.next()?;
    Some(
        lines
            .take_while(|l| l.starts_with("  "))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The validator bites: broken copies of the workflow and the experiment (a DAG task waiting
/// for a task that is not there, a misspelt field in the sweep's MPIJob, a trial parameter the
/// trialSpec no longer uses, a placeholder without a trial parameter) each fail with their own
/// message, while unchanged copies written the same way pass.
#[test]
fn the_validator_rejects_broken_copies_of_the_workflow_and_the_experiment() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, doc: &Value| {
        let path = tmp.path().join(name);
        write_yaml(&path, doc);
        path
    };
    let wf = load_one("workflow.yaml");
    let exp = load_one("katib-experiment.yaml");
    let mut files = vec![
        write("workflow.yaml", &wf),
        write("katib-experiment.yaml", &exp),
    ];
    let mut broken = Vec::new();

    let mut missing_task = wf.clone();
    let entry = wf["spec"]["entrypoint"].as_str().unwrap().to_string();
    for t in missing_task["spec"]["templates"].as_array_mut().unwrap() {
        if t["name"] == entry.as_str() {
            for task in t["dag"]["tasks"].as_array_mut().unwrap() {
                if task["name"] == "select" {
                    task["dependencies"] = serde_json::json!(["train", "training"]);
                }
            }
        }
    }
    broken.push((
        write("missing-task.yaml", &missing_task),
        "depends on 'training', which is no task of this DAG",
    ));

    let mut misspelt = wf.clone();
    for t in misspelt["spec"]["templates"].as_array_mut().unwrap() {
        if let Some(m) = t["resource"]["manifest"].as_str() {
            let m = m.replace("slotsPerWorker:", "slotPerWorker:");
            t["resource"]["manifest"] = Value::String(m);
        }
    }
    broken.push((
        write("misspelt-manifest.yaml", &misspelt),
        "unknown field 'slotPerWorker'",
    ));

    let with_spec = |from: &str, to: &str| {
        let mut e = exp.clone();
        let text = e["spec"]["trialTemplate"]["trialSpec"]
            .to_string()
            .replace(from, to);
        assert!(text.contains(to), "{to}");
        e["spec"]["trialTemplate"]["trialSpec"] = serde_json::from_str(&text).unwrap();
        e
    };
    broken.push((
        write(
            "unused-trial-parameter.yaml",
            &with_spec("${trialParameters.learningRate}", "0.001"),
        ),
        "${trialParameters.learningRate} does not occur in the trialSpec",
    ));
    broken.push((
        write(
            "unknown-placeholder.yaml",
            &with_spec("${trialParameters.hidden}", "${trialParameters.width}"),
        ),
        "placeholders without a trialParameter: ['${trialParameters.width}']",
    ));
    files.extend(broken.iter().map(|(p, _)| p.clone()));

    let Some((passed, report)) = validate(&files) else {
        return;
    };
    println!("{report}");
    assert!(!passed, "the validator passed broken manifests:\n{report}");
    for good in &files[..2] {
        assert!(
            report.contains(&format!("PASS {}#0", good.display())),
            "an unchanged copy fails:\n{report}"
        );
    }
    for (path, message) in &broken {
        let errors = failures_of(&report, path)
            .unwrap_or_else(|| panic!("{} passed:\n{report}", path.display()));
        assert!(
            errors.contains(message),
            "{}: expected {message:?} in:\n{errors}",
            path.display()
        );
    }
}
