//! Helpers for end-to-end tests: a `weft up` mesh owned by one test, curl as
//! the client, and cleanup that runs whether the test passes or fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `weft` under test: this build's, or the one `WEFT_E2E_BIN` names
/// (scripts/test.sh runs a test on the release binaries, whose proxy is
/// linked differently); `weft up` runs the `weft-proxy` beside it.
pub fn weft_exe() -> String {
    std::env::var("WEFT_E2E_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_weft").to_string())
}

/// Fails loudly (never skips) when the test cannot run here.
pub fn require_root() {
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "end-to-end tests create network namespaces and iptables rules: run them as root"
    );
    for tool in ["ip", "iptables-restore", "curl", "setpriv", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{tool} is not installed: run scripts/test.sh, which installs it"
        );
    }
}

pub fn weft(args: &[&str]) -> Output {
    Command::new(weft_exe())
        .args(args)
        .output()
        .expect("running weft")
}

/// `weft up DIR` in the foreground, for a start that is expected to fail:
/// returns when it exits (it gives up after 60 s).
pub fn up_to_the_end(dir: &Path, name: &str, subnet: u8, ingress_port: u16) -> Output {
    weft(&[
        "up",
        dir.to_str().unwrap(),
        "--name",
        name,
        "--subnet",
        &subnet.to_string(),
        "--ingress-port",
        &ingress_port.to_string(),
        "--timeout",
        "60",
    ])
}

/// A running mesh built from a private copy of examples/bookinfo, removed on drop.
pub struct Mesh {
    pub name: String,
    pub ingress: String,
    pub config_dir: PathBuf,
    child: Option<Child>,
}

impl Mesh {
    pub fn up(name: &str, subnet: u8, ingress_port: u16) -> Mesh {
        Mesh::up_example("bookinfo", name, subnet, ingress_port)
    }

    /// A mesh of `examples/<example>`.
    pub fn up_example(example: &str, name: &str, subnet: u8, ingress_port: u16) -> Mesh {
        Mesh::up_edited(example, name, subnet, ingress_port, |m| m)
    }

    /// A mesh of `examples/<example>` whose `mesh.yaml` is first passed
    /// through `edit` (a replica that fails, say).
    pub fn up_edited(
        example: &str,
        name: &str,
        subnet: u8,
        ingress_port: u16,
        edit: impl FnOnce(String) -> String,
    ) -> Mesh {
        Mesh::up_with(example, name, subnet, ingress_port, edit, &[])
    }

    /// As `up_edited`, with more arguments for `weft up`.
    pub fn up_with(
        example: &str,
        name: &str,
        subnet: u8,
        ingress_port: u16,
        edit: impl FnOnce(String) -> String,
        args: &[&str],
    ) -> Mesh {
        require_root();
        // A mesh left by an earlier, interrupted run of this same test.
        let _ = weft(&["down", "--name", name]);
        let config_dir =
            std::env::temp_dir().join(format!("weft-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&config_dir);
        std::fs::create_dir_all(&config_dir).unwrap();
        let example = Path::new(
            &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
        )
        .join("../../examples")
        .join(example);
        for entry in std::fs::read_dir(&example).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::copy(&path, config_dir.join(path.file_name().unwrap())).unwrap();
            }
        }
        let mesh_yaml = config_dir.join("mesh.yaml");
        let text = std::fs::read_to_string(&mesh_yaml).unwrap();
        std::fs::write(&mesh_yaml, edit(text)).unwrap();
        let mut child = Command::new(weft_exe())
            .args([
                "up",
                config_dir.to_str().unwrap(),
                "--name",
                name,
                "--subnet",
                &subnet.to_string(),
            ])
            .args([
                "--ingress-port",
                &ingress_port.to_string(),
                "--timeout",
                "120",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting weft up");
        let mut mesh = Mesh {
            name: name.to_string(),
            ingress: format!("http://127.0.0.1:{ingress_port}"),
            config_dir,
            child: None,
        };
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = Vec::new();
        let ready = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    let up = line.contains("is up");
                    seen.push(line);
                    if up {
                        break true;
                    }
                }
                _ => break false,
            }
        };
        // Keep draining stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        if !ready {
            let out = child.wait_with_output().unwrap();
            panic!(
                "weft up failed:\n{}\n{}",
                seen.join("\n"),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        mesh.child = Some(child);
        mesh
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILLs `weft up` itself (not the mesh), as a crash would.
    pub fn kill_up_process(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends `signal` (TERM, INT) to `weft up` and waits for it to exit, as
    /// Ctrl-C or a service manager would; returns what it wrote to stderr.
    pub fn signal_up_process(&mut self, signal: &str) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("weft up did not exit within 30 s of SIG{signal}");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        (status, err)
    }

    pub fn netns(&self, workload: &str) -> String {
        format!("weft-{}-{workload}", self.name)
    }

    pub fn apply(&self, file: &Path) -> Output {
        self.apply_args(file, &[])
    }

    /// `weft apply -f file` with `extra` arguments (`-n NAMESPACE`).
    pub fn apply_args(&self, file: &Path, extra: &[&str]) -> Output {
        let mut args = vec!["apply", "-f", file.to_str().unwrap(), "--mesh", &self.name];
        args.extend_from_slice(extra);
        weft(&args)
    }

    /// `weft apply -f file`, which must succeed.
    pub fn apply_ok(&self, file: &Path) {
        let out = self.apply(file);
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `weft apply` on a file holding `text`, named `name` (so messages can
    /// be checked for it), outside the watched config directory.
    pub fn apply_yaml(&self, name: &str, text: &str) -> Output {
        self.apply_yaml_args(name, text, &[])
    }

    /// As `apply_yaml`, with `extra` arguments for `weft apply`.
    pub fn apply_yaml_args(&self, name: &str, text: &str, extra: &[&str]) -> Output {
        // One directory per mesh: tests in one process apply concurrently.
        let dir = std::env::temp_dir().join(format!(
            "weft-e2e-apply-{}-{}",
            std::process::id(),
            self.name
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = write(&dir, name, text);
        let out = self.apply_args(&file, extra);
        let _ = std::fs::remove_dir_all(&dir);
        out
    }

    /// A JSON file `weft up` keeps for the mesh (`state.json`,
    /// `registry.json`).
    fn mesh_json(&self, file: &str) -> serde_json::Value {
        let path = format!("/run/weft/{}/{file}", self.name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }

    /// The entry of list `list` in mesh file `file` whose `key` is `value`.
    pub fn mesh_entry(&self, file: &str, list: &str, key: &str, value: &str) -> serde_json::Value {
        let v = self.mesh_json(file);
        let found = v[list].as_array().unwrap().iter().find(|e| e[key] == value);
        found
            .unwrap_or_else(|| panic!("no {list} with {key} {value:?} in {file}: {v}"))
            .clone()
    }

    pub fn api(&self) -> String {
        format!(
            "http://{}",
            self.mesh_json("state.json")["api"].as_str().unwrap()
        )
    }

    /// (pid, start time) of every process the mesh recorded.
    pub fn recorded_processes(&self) -> Vec<(i32, u64)> {
        self.mesh_json("state.json")["processes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["pid"].as_i64().unwrap() as i32,
                    p["start_time"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// The pid of the process the mesh recorded as `role` (e.g.
    /// `sidecar/httpbin-v1`).
    pub fn pid_of(&self, role: &str) -> i32 {
        let entry = self.mesh_entry("state.json", "processes", "role", role);
        entry["pid"].as_i64().unwrap() as i32
    }

    /// The address `weft up` gave `workload`'s pod.
    pub fn pod_ip(&self, workload: &str) -> String {
        let entry = self.mesh_entry("registry.json", "workloads", "name", workload);
        entry["ip"].as_str().unwrap().to_string()
    }

    pub fn log(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/run/weft/{}/logs/{file}", self.name)).unwrap_or_default()
    }

    pub fn down(&mut self) -> Output {
        let out = weft(&["down", "--name", &self.name]);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        out
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.config_dir);
    }
}

/// A command's stdout, once it has succeeded (else its stderr is the
/// failure).
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// GET with curl; returns (status, body). Extra args go before the URL.
pub fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl");
    status_and_body(&String::from_utf8_lossy(&out.stdout))
}

/// curl's output with `-w "\n%{http_code}"` as (status, body).
fn status_and_body(text: &str) -> (u16, String) {
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `n` requests on one keep-alive connection (one curl, many URLs); returns
/// the bodies' reviews workloads in order.
pub fn reviews_seen(url: &str, n: usize, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["-s".into(), "-m".into(), "60".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    for _ in 0..n {
        args.push(url.to_string());
    }
    let out = Command::new("curl").args(&args).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| l.contains("id=\"chain\""))
        .map(|l| {
            ["reviews-v1", "reviews-v2", "reviews-v3"]
                .into_iter()
                .find(|v| l.contains(v))
                .unwrap_or("error")
                .to_string()
        })
        .collect()
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Processes from `recorded` that still run (same PID and start time).
pub fn still_running(recorded: &[(i32, u64)]) -> Vec<i32> {
    recorded
        .iter()
        .filter(|(pid, start)| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .is_some_and(|s| {
                    let rest = &s[s.rfind(')').unwrap() + 2..];
                    let fields: Vec<&str> = rest.split_whitespace().collect();
                    fields[0] != "Z" && fields[19].parse::<u64>().ok() == Some(*start)
                })
        })
        .map(|(pid, _)| *pid)
        .collect()
}

/// Netns, links and processes that a mesh named `name` would own.
pub fn leftovers(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for l in String::from_utf8_lossy(&ns.stdout).lines() {
        if l.starts_with(&format!("weft-{name}-")) {
            out.push(format!("netns {l}"));
        }
    }
    let links = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    for l in String::from_utf8_lossy(&links.stdout).lines() {
        let ifname = l
            .split(": ")
            .nth(1)
            .unwrap_or("")
            .split('@')
            .next()
            .unwrap_or("");
        if ifname == format!("wb-{name}")
            || (ifname.starts_with("wv") && ifname.ends_with(&format!("-{name}")))
        {
            out.push(format!("link {l}"));
        }
    }
    let ps = Command::new("ps")
        .args(["-eo", "pid,args"])
        .output()
        .unwrap();
    for l in String::from_utf8_lossy(&ps.stdout).lines() {
        if l.contains(&weft_exe()) && l.contains(&format!("/run/weft/{name}/")) {
            out.push(format!("process {l}"));
        }
    }
    if Path::new(&format!("/run/weft/{name}")).exists() {
        out.push(format!("/run/weft/{name}"));
    }
    out
}

/// A command inside a pod's network namespace (its traffic goes through
/// the pod's sidecar capture, as the app's does).
pub fn in_pod(mesh: &Mesh, workload: &str, argv: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &mesh.netns(workload)])
        .args(argv)
        .output()
        .unwrap()
}

/// curl from inside a pod (through its sidecar); returns the body.
pub fn pod_curl(mesh: &Mesh, workload: &str, args: &[&str]) -> String {
    let mut argv = vec!["curl", "-s", "-m", "5"];
    argv.extend_from_slice(args);
    String::from_utf8_lossy(&in_pod(mesh, workload, &argv).stdout).to_string()
}

/// curl from inside a pod; (status, body).
pub fn pod_curl_status(mesh: &Mesh, workload: &str, args: &[&str]) -> (u16, String) {
    let mut all = vec!["-w", "\n%{http_code}"];
    all.extend_from_slice(args);
    status_and_body(&pod_curl(mesh, workload, &all))
}

/// Runs a Python script inside a pod (through its sidecar's capture).
pub fn pod_python(mesh: &Mesh, workload: &str, script: &str) -> Output {
    in_pod(mesh, workload, &["python3", "-c", script])
}

/// The course's lockdown: an empty AuthorizationPolicy in `default`.
pub const ALLOW_NOTHING: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-nothing
  namespace: default
spec:
  {}
";

/// Asserts that `hits` of `n` independent draws fit probability `p`: within
/// 4.5 standard deviations of `n·p`. A correct mesh fails this about once
/// in 150 000 runs; tighter bands (±2σ, ±3σ) made CI flaky.
pub fn assert_share(what: &str, hits: usize, n: usize, p: f64) {
    let mean = n as f64 * p;
    let band = 4.5 * (mean * (1.0 - p)).sqrt();
    assert!(
        (hits as f64 - mean).abs() <= band,
        "{what}: {hits} of {n}, expected {mean:.0} ± {band:.0}"
    );
}

/// A mesh.yaml plus Istio's Zipkin addon (`samples/addons/extras/zipkin.yaml`):
/// `weft demo zipkin` in `istio-system`, without a sidecar, the mesh's
/// next pod.
pub fn with_zipkin(mesh: String) -> String {
    let zipkin = "- name: zipkin
  namespace: istio-system
  labels: {app: zipkin, sidecar.istio.io/inject: \"false\"}
  command: [weft, demo, zipkin, --listen, \"0.0.0.0:9411\"]
  ports: [{containerPort: 9411, name: http-query}]
";
    let service = "- name: zipkin
  namespace: istio-system
  ports: [{name: http-query, port: 9411}]
  selector: {app: zipkin}
";
    let out = mesh.replacen("services:\n", &format!("{zipkin}services:\n{service}"), 1);
    assert!(out.contains("demo, zipkin"), "no services: in {mesh}");
    out
}

/// Istio's tracing tasks' mesh-wide Telemetry: the `zipkin` provider at
/// 100% sampling.
pub const TRACE_EVERYTHING: &str = "apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: mesh-default
  namespace: istio-system
spec:
  tracing:
  - providers:
    - name: zipkin
    randomSamplingPercentage: 100.0
";

/// The `istio` ConfigMap in `istio-system` whose mesh config is `mesh`
/// (YAML, as `istioctl install` writes it).
pub fn istio_config_map(mesh: &str) -> String {
    let indented: String = mesh.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |-\n{indented}"
    )
}

/// One pod's proxy metrics, as Prometheus would scrape them (15090).
pub fn scrape(pod_ip: &str) -> String {
    let (code, body) = curl(&format!("http://{pod_ip}:15090/stats/prometheus"), &[]);
    assert_eq!(code, 200, "{body}");
    body
}

/// The sample lines of `metric` carrying every `label="value"` of `want`.
pub fn metric_lines<'a>(text: &'a str, metric: &str, want: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .filter(|l| want.iter().all(|w| l.contains(w)))
        .collect()
}
