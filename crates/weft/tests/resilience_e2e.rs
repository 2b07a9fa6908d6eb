//! End-to-end: Istio's traffic-management tasks with Istio's own YAML, on
//! `weft up` meshes of the Bookinfo example, checking what Istio's docs say
//! the user sees and the response flag each hop logs. Each test owns one
//! mesh (its own name, subnet and ingress port), so they run in parallel.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::*;

const REVIEWS_UNAVAILABLE: &str = "Sorry, product reviews are currently unavailable for this book.";
const RATINGS_UNAVAILABLE: &str = "Ratings service is currently unavailable";

fn sample(file: &str) -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
        .join("../../examples/bookinfo/routes")
        .join(file)
}

fn apply(mesh: &Mesh, file: &str) {
    mesh.apply_ok(&sample(file));
}

fn apply_yaml(mesh: &Mesh, name: &str, text: &str) {
    let out = mesh.apply_yaml(name, text);
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The product page as `user` sees it, and how long it took.
fn page_as(mesh: &Mesh, user: Option<&str>) -> (u16, String, Duration) {
    let url = format!("{}/productpage", mesh.ingress);
    let header = user.map(|u| format!("end-user: {u}"));
    let extra: Vec<&str> = match &header {
        Some(h) => vec!["-H", h.as_str()],
        None => vec![],
    };
    let start = Instant::now();
    let (code, body) = curl(&url, &extra);
    (code, body, start.elapsed())
}

/// Applies the task's routing and waits until jason is routed to reviews-v2.
fn jason_on_reviews_v2(mesh: &Mesh) {
    apply(mesh, "virtual-service-all-v1.yaml");
    apply(mesh, "virtual-service-reviews-jason-v2-v1.yaml");
    wait_until("jason to reach reviews-v2", Duration::from_secs(20), || {
        page_as(mesh, Some("jason")).1.contains("reviews-v2")
    });
}

/// Istio's fault-injection task, delay: ratings is delayed 7 s for jason;
/// reviews-v2 would wait 10 s, but productpage gives up on reviews after
/// 3 s × 2 tries, so the page says the reviews are unavailable.
#[test]
fn fault_injection_delay_for_jason() {
    let mesh = Mesh::up("fdelay", 110, 18110);
    jason_on_reviews_v2(&mesh);
    apply(&mesh, "virtual-service-ratings-test-delay.yaml");
    wait_until("the delay to apply", Duration::from_secs(20), || {
        let (code, body, took) = page_as(&mesh, Some("jason"));
        code == 200 && body.contains(REVIEWS_UNAVAILABLE) && took >= Duration::from_secs(6)
    });
    let (code, body, took) = page_as(&mesh, None);
    assert_eq!(code, 200);
    assert!(
        !body.contains(REVIEWS_UNAVAILABLE),
        "others are not delayed: {body}"
    );
    assert!(
        took < Duration::from_secs(3),
        "others are not delayed: {took:?}"
    );
    // reviews-v2's sidecar delayed its call to ratings (flag DI); the
    // caller gave up first, so the line reads `0 DI,DC`, as Envoy's would.
    wait_until(
        "reviews-v2's sidecar to log DI",
        Duration::from_secs(3),
        || mesh.log("reviews-v2.sidecar.log").contains("\" 0 DI,DC "),
    );
}

/// Istio's fault-injection task, abort: ratings answers jason with 500, and
/// the page shows "Ratings service is currently unavailable".
#[test]
fn fault_injection_abort_for_jason() {
    let mesh = Mesh::up("fabort", 111, 18111);
    jason_on_reviews_v2(&mesh);
    apply(&mesh, "virtual-service-ratings-test-abort.yaml");
    wait_until("the abort to apply", Duration::from_secs(10), || {
        page_as(&mesh, Some("jason"))
            .1
            .contains(RATINGS_UNAVAILABLE)
    });
    let (_, body, _) = page_as(&mesh, None);
    assert!(
        !body.contains(RATINGS_UNAVAILABLE),
        "others are not aborted: {body}"
    );
    wait_until(
        "reviews-v2's sidecar to log 500 FI",
        Duration::from_secs(3),
        || mesh.log("reviews-v2.sidecar.log").contains("\" 500 FI "),
    );
}

/// Istio's request-timeouts task: ratings delayed 2 s, then a 0.5 s
/// timeout on reviews: the page says reviews are unavailable, in about a
/// second (productpage tries twice), and productpage's sidecar logs UT.
#[test]
fn request_timeouts_task() {
    let mesh = Mesh::up("timeouts", 112, 18112);
    apply(&mesh, "virtual-service-all-v1.yaml");
    apply_yaml(&mesh, "reviews-v2.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: v2\n");
    apply_yaml(&mesh, "ratings-delay.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: ratings\nspec:\n  hosts:\n  - ratings\n  http:\n  - fault:\n      delay:\n        percentage:\n          value: 100\n        fixedDelay: 2s\n    route:\n    - destination:\n        host: ratings\n        subset: v1\n");
    wait_until(
        "ratings to be delayed by 2 s",
        Duration::from_secs(30),
        || {
            let (_, body, took) = page_as(&mesh, None);
            body.contains("reviews-v2")
                && body.contains("ratings-v1")
                && took >= Duration::from_secs(2)
        },
    );
    apply_yaml(&mesh, "reviews-timeout.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts:\n  - reviews\n  http:\n  - route:\n    - destination:\n        host: reviews\n        subset: v2\n    timeout: 0.5s\n");
    wait_until(
        "the 0.5 s timeout to apply",
        Duration::from_secs(15),
        || {
            let (code, body, took) = page_as(&mesh, None);
            code == 200 && body.contains(REVIEWS_UNAVAILABLE) && took < Duration::from_secs(2)
        },
    );
    wait_until(
        "productpage's sidecar to log 504 UT",
        Duration::from_secs(3),
        || {
            mesh.log("productpage-v1.sidecar.log")
                .contains("\" 504 UT ")
        },
    );
}

/// Redirect, rewrite, direct response and header operations, seen from
/// inside productpage's pod through its sidecar.
#[test]
fn redirect_rewrite_direct_response_and_headers() {
    let mesh = Mesh::up("httprts", 113, 18113);
    apply_yaml(&mesh, "details-routes.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: details\nspec:\n  hosts:\n  - details\n  http:\n  - match:\n    - uri:\n        prefix: /old\n    redirect:\n      uri: /details/0\n      authority: details.example\n  - match:\n    - uri:\n        exact: /teapot\n    directResponse:\n      status: 418\n      body:\n        string: short and stout\n  - match:\n    - uri:\n        prefix: /v2/details\n    rewrite:\n      uri: /details\n    headers:\n      request:\n        set:\n          end-user: rewritten\n      response:\n        add:\n          x-weft: resilience\n    route:\n    - destination:\n        host: details\n  - route:\n    - destination:\n        host: details\n");
    let url = |path: &str| format!("http://details:9080{path}");
    wait_until("the routes to apply", Duration::from_secs(10), || {
        pod_curl(&mesh, "productpage-v1", &[&url("/teapot")]) == "short and stout"
    });
    let head = pod_curl(
        &mesh,
        "productpage-v1",
        &["-D", "-", "-o", "/dev/null", &url("/old/x")],
    );
    assert!(head.starts_with("HTTP/1.1 301"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("location: http://details.example/details/0"),
        "{head}"
    );
    let got = pod_curl(&mesh, "productpage-v1", &["-D", "-", &url("/v2/details/0")]);
    assert!(
        got.contains("\"workload\":\"details-v1\""),
        "rewritten to /details/0: {got}"
    );
    assert!(
        got.contains("\"end-user\":\"rewritten\""),
        "request header set: {got}"
    );
    assert!(
        got.to_ascii_lowercase().contains("x-weft: resilience"),
        "response header added: {got}"
    );
}

const MIRROR: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: httpbin\nspec:\n  hosts:\n  - httpbin\n  http:\n  - route:\n    - destination:\n        host: httpbin\n        subset: v1\n      weight: 100\n    mirror:\n      host: httpbin\n      subset: v2\n    mirrorPercentage:\n      value: 100.0\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: httpbin\nspec:\n  host: httpbin\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v2\n";

/// Istio's mirroring task: v1 answers every request, v2 receives a copy
/// (its host with Envoy's `-shadow` suffix) and its answers are dropped.
#[test]
fn mirroring_task() {
    let mesh = Mesh::up_example("httpbin", "mirror", 114, 18114);
    apply_yaml(&mesh, "mirror.yaml", MIRROR);
    let get = || pod_curl(&mesh, "curl", &["http://httpbin:8000/headers"]);
    wait_until("the mirror to apply", Duration::from_secs(10), || {
        get().contains("\"workload\":\"httpbin-v1\"")
            && mesh
                .log("httpbin-v2.log")
                .contains("host=httpbin-shadow:8000")
    });
    for i in 0..10 {
        let body = get();
        assert!(
            body.contains("\"workload\":\"httpbin-v1\""),
            "request {i}: {body}"
        );
    }
    wait_until("v2 to get every copy", Duration::from_secs(5), || {
        mesh.log("httpbin-v2.log")
            .matches("GET /headers host=httpbin-shadow:8000")
            .count()
            >= 11
    });
    let v1 = mesh.log("httpbin-v1.log");
    assert!(!v1.contains("shadow"), "v1 gets the originals only");
}

/// Istio's circuit-breaking task's DestinationRule, unchanged.
const CIRCUIT_BREAKER: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: httpbin\nspec:\n  host: httpbin\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: 1\n      http:\n        http1MaxPendingRequests: 1\n        maxRequestsPerConnection: 1\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 3m\n      maxEjectionPercent: 100\n";

/// Istio's circuit-breaking task: with one connection and one pending
/// request allowed, concurrent load through the client's sidecar gets some
/// 503s, which its access log flags UO, and the rest through.
#[test]
fn circuit_breaking_task() {
    let mesh = Mesh::up_example("httpbin", "breaker", 115, 18115);
    apply_yaml(&mesh, "breaker.yaml", CIRCUIT_BREAKER);
    let url = "http://httpbin:8000/delay/0.2";
    wait_until(
        "the rule to reach the client",
        Duration::from_secs(10),
        || {
            pod_curl(
                &mesh,
                "curl",
                &["-o", "/dev/null", "-w", "%{http_code}", url],
            ) == "200"
        },
    );
    // 30 requests, 6 at a time, as fortio -c 6 -n 30 would send them.
    let mut args = vec!["--parallel", "--parallel-max", "6", "-w", "%{http_code}\n"];
    for _ in 0..30 {
        args.extend(["-o", "/dev/null", url]);
    }
    let out = pod_curl(&mesh, "curl", &args);
    let codes: Vec<&str> = out.lines().collect();
    assert_eq!(codes.len(), 30, "{out}");
    let ok = codes.iter().filter(|c| **c == "200").count();
    let overflow = codes.iter().filter(|c| **c == "503").count();
    assert_eq!(ok + overflow, 30, "{codes:?}");
    assert!(
        ok > 0 && overflow > 0,
        "some pass, some trip the breaker: {codes:?}"
    );
    wait_until(
        "the client's sidecar to log UO",
        Duration::from_secs(3),
        || mesh.log("curl.sidecar.log").contains("\" 503 UO "),
    );
}

/// Outlier detection: httpbin-v2 fails every request; after its first 5xx
/// it is ejected for three minutes and gets nothing more, while the client
/// sees no failure (Istio's default retries send the one failed try to v1).
#[test]
fn outlier_detection_ejects_a_failing_replica() {
    let mesh = Mesh::up_edited("httpbin", "outlier", 116, 18116, |m| {
        m.replace(
            "[weft, demo, httpbin, --version, v2,",
            "[weft, demo, httpbin, --fail-percent, \"100\", --version, v2,",
        )
    });
    apply_yaml(&mesh, "outlier.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: httpbin\nspec:\n  host: httpbin\n  trafficPolicy:\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 3m\n      maxEjectionPercent: 100\n");
    let get = || {
        pod_curl(
            &mesh,
            "curl",
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "http://httpbin:8000/get",
            ],
        )
    };
    // Until the rule arrives, round robin keeps sending v2 its share.
    wait_until("v2 to be ejected", Duration::from_secs(10), || {
        (0..4).all(|_| get() == "200") && mesh.log("httpbin-v2.sidecar.log").contains("\" 503 ")
    });
    let failed_before = mesh
        .log("httpbin-v2.sidecar.log")
        .matches("\" 503 ")
        .count();
    for i in 0..20 {
        assert_eq!(get(), "200", "request {i}");
    }
    std::thread::sleep(Duration::from_millis(1500)); // one access-log flush
    let failed_after = mesh
        .log("httpbin-v2.sidecar.log")
        .matches("\" 503 ")
        .count();
    assert_eq!(
        failed_before, failed_after,
        "the ejected replica got nothing"
    );
}

/// Which tcp-echo version answered each of `n` new connections from
/// productpage's pod.
fn tcp_echo_versions(mesh: &Mesh, n: usize) -> Vec<String> {
    let script = format!(
        "import socket\nfor _ in range({n}):\n    s = socket.create_connection(('tcp-echo', 9000), timeout=5)\n    s.sendall(b'hi\\n')\n    print(s.recv(100).decode().split()[0])\n    s.close()\n"
    );
    let out = pod_python(mesh, "productpage-v1", &script);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Istio's TCP traffic-shifting task: all connections to v1, then 80/20.
#[test]
fn tcp_traffic_shifting_task() {
    let mesh = Mesh::up("tcpshift", 117, 18117);
    apply(&mesh, "tcp-echo-all-v1.yaml");
    wait_until(
        "every connection to reach v1",
        Duration::from_secs(10),
        || {
            tcp_echo_versions(&mesh, 10)
                .iter()
                .all(|v| v == "tcp-echo-v1")
        },
    );
    apply(&mesh, "tcp-echo-20-v2.yaml");
    wait_until("v2 to get connections", Duration::from_secs(10), || {
        tcp_echo_versions(&mesh, 10)
            .iter()
            .any(|v| v == "tcp-echo-v2")
    });
    let seen = tcp_echo_versions(&mesh, 200);
    assert_eq!(seen.len(), 200, "{seen:?}");
    let v2 = seen.iter().filter(|v| *v == "tcp-echo-v2").count();
    assert_share("connections to v2", v2, 200, 0.2);
    assert_eq!(
        seen.iter().filter(|v| *v == "tcp-echo-v1").count(),
        200 - v2
    );
}

/// DestinationRule consistentHash by header: every request carrying the
/// same `x-user` reaches the same replica.
#[test]
fn consistent_hash_by_header() {
    let mesh = Mesh::up_example("httpbin", "hashing", 118, 18118);
    apply_yaml(&mesh, "hash.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: httpbin\nspec:\n  host: httpbin\n  trafficPolicy:\n    loadBalancer:\n      consistentHash:\n        httpHeaderName: x-user\n");
    let who = |user: &str| {
        let header = format!("x-user: {user}");
        let body = pod_curl(&mesh, "curl", &["-H", &header, "http://httpbin:8000/get"]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["workload"].as_str().unwrap_or("").to_string()
    };
    wait_until("the hash policy to apply", Duration::from_secs(10), || {
        let first = who("alice");
        !first.is_empty() && (0..6).all(|_| who("alice") == first)
    });
    let mut versions = std::collections::BTreeSet::new();
    for user in 0..16 {
        let user = format!("user-{user}");
        let first = who(&user);
        for _ in 0..3 {
            assert_eq!(who(&user), first, "{user} stays on one replica");
        }
        versions.insert(first);
    }
    assert_eq!(
        versions.len(),
        2,
        "users spread over both replicas: {versions:?}"
    );
}

/// httpbin's traffic to v1 only.
const TO_V1: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: httpbin\nspec:\n  hosts:\n  - httpbin\n  http:\n  - route:\n    - destination:\n        host: httpbin\n        subset: v1\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: httpbin\nspec:\n  host: httpbin\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n";

/// A sidecar sent SIGTERM, as when its pod is deleted, drains as
/// istio-agent drains Envoy: the request it is serving finishes (through
/// both sidecars, mTLS between them), then it exits.
#[test]
fn a_terminated_sidecar_finishes_its_requests_then_exits() {
    // The pod's own terminationDrainDuration (Istio's annotation): the
    // sidecar drains up to 20 s, `down` would wait 21 s for it; it exits
    // sooner, with nothing left to wait for.
    let mesh = Mesh::up_edited("httpbin", "drain", 171, 18171, |m| {
        m.replacen(
            "  labels: {app: httpbin, version: v1}\n",
            "  labels: {app: httpbin, version: v1}\n  annotations: {proxy.istio.io/config: '{\"terminationDrainDuration\": \"20s\"}'}\n",
            1,
        )
    });
    apply_yaml(&mesh, "v1.yaml", TO_V1);
    let slow = ["-o", "/dev/null", "http://httpbin:8000/delay/1.5"];
    let v1 = || pod_curl(&mesh, "curl", &["http://httpbin:8000/get"]);
    wait_until("the route to v1", Duration::from_secs(10), || {
        (0..4).all(|_| v1().contains("\"workload\":\"httpbin-v1\""))
    });
    let sidecar = mesh.pid_of("sidecar/httpbin-v1");
    let argv = std::fs::read(format!("/proc/{sidecar}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&argv).contains("--drain-duration\x0020000ms\x00"),
        "{}",
        String::from_utf8_lossy(&argv)
    );
    let recorded = mesh.mesh_entry("state.json", "processes", "role", "sidecar/httpbin-v1");
    assert_eq!(recorded["grace_ms"], 21000, "{recorded}");
    let (code, _) = std::thread::scope(|s| {
        let request = s.spawn(|| pod_curl_status(&mesh, "curl", &slow));
        std::thread::sleep(Duration::from_millis(500));
        let term = std::process::Command::new("kill")
            .args(["-TERM", &sidecar.to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        request.join().unwrap()
    });
    assert_eq!(
        code,
        200,
        "the request in flight when the sidecar was told to stop\n{}\n{}",
        mesh.log("curl.sidecar.log"),
        mesh.log("httpbin-v1.sidecar.log")
    );
    let alive = || std::path::Path::new(&format!("/proc/{sidecar}")).exists();
    wait_until("the sidecar to exit", Duration::from_secs(5), || {
        let stat = std::fs::read_to_string(format!("/proc/{sidecar}/stat")).unwrap_or_default();
        !alive() || stat.contains(") Z ")
    });
    let log = mesh.log("httpbin-v1.sidecar.log");
    assert!(log.contains("draining before exit"), "{log}");
    assert!(
        !log.contains("drain time over"),
        "it had nothing left to wait for: {log}"
    );
}

/// Locality failover: `curl` and httpbin-v1 share zone1, two replicas of
/// httpbin-v2 and a second client, `curl2`, live in zone2. With outlier
/// detection on, each client's traffic stays in its own zone: curl2's never
/// reaches v1. v1 fails every request, is ejected by curl's sidecar, and
/// the replicas in the next locality take over, curl seeing no error.
#[test]
fn locality_failover_to_the_next_zone() {
    let mesh = Mesh::up_edited("httpbin", "locality", 119, 18119, |m| {
        m.replace(
            "  command: [weft, demo, httpbin, --version, v1,",
            "  locality: region1/zone1\n  command: [weft, demo, httpbin, --fail-percent, \"100\", --version, v1,",
        )
        .replace(
            "  command: [weft, demo, httpbin, --version, v2,",
            "  replicas: 2\n  locality: region1/zone2\n  command: [weft, demo, httpbin, --version, v2,",
        )
        .replace(
            "  command: [weft, demo, httpbin, --version, client,",
            "  locality: region1/zone1\n  command: [weft, demo, httpbin, --version, client,",
        )
        .replace(
            "services:",
            "- name: curl2\n  labels: {app: curl2}\n  locality: region1/zone2\n  command: [weft, demo, httpbin, --version, client2, --listen, \"0.0.0.0:8080\"]\n  ports: [{containerPort: 8080, name: http}]\nservices:",
        )
    });
    apply_yaml(&mesh, "failover.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: httpbin\nspec:\n  host: httpbin\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        enabled: true\n    outlierDetection:\n      consecutive5xxErrors: 1\n      interval: 1s\n      baseEjectionTime: 3m\n      maxEjectionPercent: 100\n");
    let who = || {
        let body = pod_curl(&mesh, "curl", &["http://httpbin:8000/get"]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["workload"].as_str().unwrap_or("").to_string()
    };
    // curl2 (zone2) is served in zone2 only, once the rule is in.
    let from_zone2 = || {
        let body = pod_curl(&mesh, "curl2", &["http://httpbin:8000/get"]);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v["workload"].as_str().unwrap_or("").to_string()
    };
    wait_until("curl2's rule to apply", Duration::from_secs(10), || {
        (0..6).all(|_| from_zone2() == "httpbin-v2")
    });
    // Calls from before the rule applied reach the log within one flush.
    std::thread::sleep(Duration::from_millis(1500));
    let v1_before = mesh
        .log("httpbin-v1.sidecar.log")
        .matches("198.18.119.14")
        .count();
    for i in 0..10 {
        assert_eq!(from_zone2(), "httpbin-v2", "curl2 request {i}");
    }
    std::thread::sleep(Duration::from_millis(1500)); // one access-log flush
    let v1_after = mesh
        .log("httpbin-v1.sidecar.log")
        .matches("198.18.119.14")
        .count();
    assert_eq!(v1_before, v1_after, "curl2's traffic stays in zone2");
    // curl (zone1): v1 is ejected by the requests it fails.
    wait_until("v1 to be ejected", Duration::from_secs(15), || {
        let served: Vec<String> = (0..3).map(|_| who()).collect();
        served.iter().all(|w| w == "httpbin-v2")
            && mesh.log("httpbin-v1.sidecar.log").contains("\" 503 ")
    });
    for i in 0..20 {
        assert_eq!(who(), "httpbin-v2", "request {i}");
    }
    // Both replicas (pods .11 and .12 of the mesh) took requests.
    std::thread::sleep(Duration::from_millis(1500)); // one access-log flush
    let log = mesh.log("curl.sidecar.log");
    let seen: Vec<&str> = ["198.18.119.11:8080", "198.18.119.12:8080"]
        .into_iter()
        .filter(|a| log.contains(a))
        .collect();
    assert_eq!(seen.len(), 2, "both replicas in the next zone serve: {log}");
}

/// Istio's locality load-balancing task, distribution: the client in
/// region1/zone1 sends 70% to its own zone and 20% to zone2 (region3 has
/// no endpoints, so zone1 has 70/90 of the traffic and zone2 20/90).
#[test]
fn locality_weighted_distribution() {
    let mesh = Mesh::up_edited("httpbin", "distrib", 120, 18120, |m| {
        m.replace(
            "  command: [weft, demo, httpbin, --version, v1,",
            "  locality: region1/zone1\n  command: [weft, demo, httpbin, --version, v1,",
        )
        .replace(
            "  command: [weft, demo, httpbin, --version, v2,",
            "  locality: region1/zone2\n  command: [weft, demo, httpbin, --version, v2,",
        )
        .replace(
            "  command: [weft, demo, httpbin, --version, client,",
            "  locality: region1/zone1\n  command: [weft, demo, httpbin, --version, client,",
        )
    });
    apply_yaml(&mesh, "distribute.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: httpbin\nspec:\n  host: httpbin\n  trafficPolicy:\n    loadBalancer:\n      localityLbSetting:\n        enabled: true\n        distribute:\n        - from: region1/zone1/*\n          to:\n            \"region1/zone1/*\": 70\n            \"region1/zone2/*\": 20\n            \"region3/zone4/*\": 10\n    outlierDetection:\n      consecutive5xxErrors: 100\n      interval: 1s\n      baseEjectionTime: 1m\n");
    let url = "http://httpbin:8000/get";
    let shares = || {
        let urls = vec![url; 200];
        let out = pod_curl(&mesh, "curl", &urls);
        (
            out.matches("httpbin-v1").count(),
            out.matches("httpbin-v2").count(),
        )
    };
    // Before the rule is in, round robin gives about half each.
    wait_until("the weights to apply", Duration::from_secs(15), || {
        let (v1, v2) = shares();
        v1 + v2 == 200 && v1 > 130
    });
    let (v1, v2) = shares();
    assert_eq!(v1 + v2, 200);
    // 70 of the 90 weight points stay in zone1.
    assert_share("kept in zone1 (v1)", v1, 200, 70.0 / 90.0);
}
