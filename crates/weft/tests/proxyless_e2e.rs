//! End-to-end: proxyless gRPC. Python's grpcio, in xDS mode in a pod with
//! no sidecar (`examples/proxyless`, Istio's `grpc-agent` annotation), takes
//! its routes from Weft's control plane and applies the VirtualService
//! itself: weights, header matches, faults, and changes pushed while it
//! runs. Subnet 150, ingress port 18150.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const CATALOG: &str = "xds:///productcatalogservice.default.svc.cluster.local:3550";

fn example(file: &str) -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
        .join("../../examples/proxyless")
        .join(file)
}

/// `client.py ARGS` in the proxyless pod, as its app would run.
fn client_command(mesh: &Mesh, args: &[&str]) -> Command {
    let bootstrap = format!(
        "GRPC_XDS_BOOTSTRAP=/run/weft/{}/bootstrap/grpc-client.default.grpc.json",
        mesh.name
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &mesh.netns("grpc-client"), "env"])
        .arg(bootstrap)
        .arg("python3")
        .arg(example("client.py"))
        .args(args);
    cmd
}

/// A call: its answer (the serving workload, or the gRPC status), its
/// duration in seconds and when it started (Unix time).
type Call = (String, f64, f64);

fn calls(mesh: &Mesh, args: &[&str]) -> Vec<Call> {
    let out = client_command(mesh, args).output().unwrap();
    assert!(
        out.status.success(),
        "client.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(parse)
        .collect()
}

fn parse(line: &str) -> Call {
    let mut fields = line.rsplitn(3, '\t');
    let started = fields.next().unwrap().parse().unwrap();
    let secs = fields
        .next()
        .expect("answer, seconds, start")
        .parse()
        .unwrap();
    (fields.next().unwrap().to_string(), secs, started)
}

fn count(answers: &[Call], what: &str) -> usize {
    answers.iter().filter(|(a, ..)| a.contains(what)).count()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn apply(mesh: &Mesh, file: &str) {
    mesh.apply_ok(&example(file));
}

#[test]
fn grpcio_routes_by_weft_virtual_services() {
    let mesh = Mesh::up_example("proxyless", "grpcxds", 150, 18150);
    // A name no service has: gRPC reports the missing listener (after its
    // 15 s does-not-exist timer) instead of hanging.
    let missing = {
        let mut cmd = client_command(
            &mesh,
            &[
                "xds:///nothing.default.svc.cluster.local:3550",
                "-n",
                "1",
                "--fail-fast",
                "--timeout",
                "30",
            ],
        );
        std::thread::spawn(move || cmd.output().unwrap())
    };

    // No VirtualService: both versions serve, by round robin (among the
    // connections ready, so not exactly half each at the start).
    let seen = calls(&mesh, &[CATALOG, "-n", "20"]);
    assert!(count(&seen, "productcatalog-v1") >= 5, "{seen:?}");
    assert!(count(&seen, "productcatalog-v2") >= 5, "{seen:?}");
    // Short names resolve as they do for a sidecar in the namespace.
    let short = calls(&mesh, &["xds:///productcatalogservice:3550", "-n", "2"]);
    assert_eq!(count(&short, "productcatalog-"), 2, "{short:?}");

    // Weights and a header match, pushed to a client that is running.
    let mut live = client_command(&mesh, &[CATALOG, "-n", "400", "--interval", "0.02"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(live.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("productcatalog-"), "{first}");
    let status =
        String::from_utf8_lossy(&weft(&["proxy-status", "--mesh", &mesh.name]).stdout).to_string();
    let row = status
        .lines()
        .find(|l| l.starts_with("grpc-client.default"))
        .unwrap_or_else(|| panic!("no proxyless row:\n{status}"));
    assert!(row.contains("proxyless"), "{status}");
    assert!(!row.contains("NACK") && row.contains("SYNCED"), "{status}");
    apply(&mesh, "routes/weights-and-header.yaml");
    // Calls that started a second after the apply returned follow 80/20.
    let pushed = now() + 1.0;
    let after: Vec<Call> = lines
        .map(|l| parse(&l.unwrap()))
        .filter(|(.., started)| *started > pushed)
        .collect();
    assert!(live.wait().unwrap().success());
    let n = after.len();
    assert!(n >= 100, "{n} calls after the push");
    let v2 = count(&after, "productcatalog-v2");
    assert_eq!(count(&after, "productcatalog-v1") + v2, n, "{after:?}");
    assert_share("calls to v2", v2, n, 0.2);
    let jason = calls(&mesh, &[CATALOG, "-n", "10", "-H", "end-user=jason"]);
    assert_eq!(count(&jason, "productcatalog-v2"), 10, "{jason:?}");

    // Faults, injected by grpcio itself: an abort with a gRPC status and
    // a delay, each for one end user; the rest untouched.
    apply(&mesh, "routes/fault.yaml");
    wait_until("the abort to apply", Duration::from_secs(20), || {
        let r = calls(&mesh, &[CATALOG, "-n", "1", "-H", "end-user=tester"]);
        r[0].0.starts_with("UNAVAILABLE")
    });
    let aborted = calls(&mesh, &[CATALOG, "-n", "5", "-H", "end-user=tester"]);
    assert_eq!(
        count(&aborted, "UNAVAILABLE: Fault injected"),
        5,
        "{aborted:?}"
    );
    let slow = calls(&mesh, &[CATALOG, "-n", "2", "-H", "end-user=slow-tester"]);
    for (answer, secs, _) in &slow {
        assert!(answer.starts_with("productcatalog-"), "{slow:?}");
        assert!(*secs >= 1.9, "a 2 s delay, took {secs} s: {slow:?}");
    }
    let others = calls(&mesh, &[CATALOG, "-n", "4"]);
    assert_eq!(count(&others, "productcatalog-"), 4, "{others:?}");

    let out = missing.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // grpcio's words vary by version; the status and the name do not.
    assert!(
        text.starts_with("UNAVAILABLE") && text.contains("nothing.default.svc.cluster.local:3550"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
