//! End-to-end: `weft up` on the Bookinfo example, driven by curl through the
//! ingress gateway, with config changes applied while traffic flows.
//! Each test owns one mesh (its own name, subnet and ingress port).

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

fn routes(file: &str) -> std::path::PathBuf {
    std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("../../examples/bookinfo/routes")
    .join(file)
}

fn count(seen: &[String], v: &str) -> usize {
    seen.iter().filter(|s| *s == v).count()
}

/// The routing scenarios of the local-mesh issue, in one mesh, in order.
#[test]
fn bookinfo_routing_end_to_end() {
    let mesh = Mesh::up("e2e", 101, 18101);
    let page = format!("{}/productpage", mesh.ingress);

    // No routing config: every reviews version answers.
    let seen = reviews_seen(&page, 60, &[]);
    assert_eq!(seen.len(), 60, "every request renders a page: {seen:?}");
    for v in ["reviews-v1", "reviews-v2", "reviews-v3"] {
        assert!(
            count(&seen, v) > 0,
            "{v} never answered in 60 requests: {seen:?}"
        );
    }
    let (code, _) = curl(&format!("{}/nowhere", mesh.ingress), &[]);
    assert_eq!(code, 404, "a path no VirtualService routes gets 404 (NR)");
    // Access logs are flushed once a second, as Envoy's are.
    wait_until("the gateway to log NR", Duration::from_secs(3), || {
        mesh.log("istio-ingressgateway.log").contains("404 NR")
    });

    // Names resolve inside pods, in all three forms, through the capture.
    for host in [
        "reviews",
        "reviews.default",
        "reviews.default.svc.cluster.local",
    ] {
        let body = pod_curl(
            &mesh,
            "productpage-v1",
            &[&format!("http://{host}:9080/reviews/0")],
        );
        assert!(
            body.contains("\"workload\":\"reviews-v"),
            "{host} from productpage's pod: {body}"
        );
    }

    let analysis = weft(&["analyze", "--mesh", &mesh.name, "-A"]);
    let report = String::from_utf8_lossy(&analysis.stdout);
    assert!(
        analysis.status.success() && report.contains("No validation issues"),
        "the running mesh analyzes clean: {report}"
    );

    proxies_run_the_proxy_binary(&mesh);
    shift_all_to_v3_without_errors(&mesh, &page);
    trace_headers_follow_the_chain(&page);
    header_routing(&mesh, &page);
    weighted_split(&mesh, &page);
    bad_yaml_is_refused(&mesh, &page);
    bad_file_keeps_last_good_config(&mesh, &page);
    unsupported_resource_is_nacked(&mesh, &page);
    opaque_tcp_passes_the_mesh(&mesh);
    get_and_delete(&mesh, &page);
    dangling_reference_warns_and_gets_nc(&mesh, &page);
    method_query_and_without_headers_route(&mesh);
    dead_upstreams_get_response_flags(&mesh);
}

fn opaque_tcp_passes_the_mesh(mesh: &Mesh) {
    // A port named `tcp` is opaque TCP: captured, proxied by tcp_proxy, no HTTP.
    let script = "import socket; s=socket.create_connection(('tcp-echo', 9000), timeout=5); s.sendall(b'hello mesh\\n'); print(s.recv(200).decode().strip())";
    let out = pod_python(mesh, "productpage-v1", script);
    let reply = String::from_utf8_lossy(&out.stdout);
    let reply = reply.trim();
    assert!(
        reply == "tcp-echo-v1 hello mesh" || reply == "tcp-echo-v2 hello mesh",
        "{reply:?}, stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the TCP access-log line", Duration::from_secs(3), || {
        mesh.log("productpage-v1.sidecar.log")
            .contains("outbound|9000||tcp-echo.default.svc.cluster.local")
    });
    let (_, syncz) = curl(&format!("{}/debug/syncz", mesh.api()), &[]);
    assert!(
        syncz.contains("198.19.101.14_9000"),
        "the debug view names the TCP listener sent: {syncz}"
    );
}

fn get_and_delete(mesh: &Mesh, page: &str) {
    let out = weft(&["get", "vs", "reviews", "--mesh", &mesh.name, "-o", "yaml"]);
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success()
            && yaml.contains("kind: VirtualService")
            && yaml.contains("weight: 80"),
        "{yaml}"
    );
    let out = weft(&[
        "get",
        "destinationrules",
        "-n",
        "default",
        "--mesh",
        &mesh.name,
        "-o",
        "json",
    ]);
    let rules: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("get -o json is JSON");
    assert_eq!(
        rules.as_array().unwrap().len(),
        4,
        "the four rules of destination-rule-all.yaml"
    );
    for rule in rules.as_array().unwrap() {
        let meta = &rule["metadata"];
        assert!(
            meta["resourceVersion"].is_string() && meta["generation"].as_i64() >= Some(1),
            "the store stamps resourceVersion and generation: {meta}"
        );
    }
    // A dry run validates on the control plane and stores nothing.
    let v3 = routes("virtual-service-reviews-v3.yaml");
    let out = weft(&[
        "apply",
        "--dry-run",
        "-f",
        v3.to_str().unwrap(),
        "--mesh",
        &mesh.name,
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("dry run"), "{said}");
    let out = weft(&["get", "vs", "reviews", "--mesh", &mesh.name, "-o", "yaml"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("weight: 80"),
        "the dry run changed nothing"
    );
    let out = weft(&["delete", "vs", "reviews", "--mesh", &mesh.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        "all versions to answer again",
        Duration::from_secs(3),
        || {
            reviews_seen(page, 30, &[])
                .iter()
                .any(|v| v == "reviews-v3")
        },
    );
    let out = weft(&["delete", "dr", "reviews", "--mesh", &mesh.name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("destination-rule-all.yaml"),
        "a file's resource is edited in its file: {err}"
    );
}

/// A route to a subset nobody defined is accepted (config may arrive in
/// any order, as in Istio), `weft apply` says what it references that does
/// not exist, and requests get Envoy's 503 NC (no cluster).
fn dangling_reference_warns_and_gets_nc(mesh: &Mesh, page: &str) {
    let out = mesh.apply_yaml(
        "weft-e2e-dangling.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v9}}]\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("IST0101")
            && err.contains("reviews+v9")
            && err.contains("weft-e2e-dangling.yaml:1"),
        "apply names the missing subset and where it was written: {err}"
    );
    wait_until("reviews to fail with NC", Duration::from_secs(3), || {
        curl(page, &[])
            .1
            .contains("reviews: 503 Service Unavailable")
    });
    wait_until("NC in the access log", Duration::from_secs(3), || {
        mesh.log("productpage-v1.sidecar.log")
            .contains("503 NC cluster_not_found ")
    });
    let out = weft(&["delete", "vs", "reviews", "--mesh", &mesh.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Match conditions beyond path and headers, from a sidecar's point of view.
fn method_query_and_without_headers_route(mesh: &Mesh) {
    let out = mesh.apply_yaml(
        "weft-e2e-matches.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews}\nspec:\n  hosts: [reviews]\n  http:\n  - match: [{method: {exact: POST}}]\n    route: [{destination: {host: reviews, subset: v2}}]\n  - match: [{queryParams: {v: {exact: '3'}}, withoutHeaders: {x-debug: {exact: '1'}}}]\n    route: [{destination: {host: reviews, subset: v3}}]\n  - route: [{destination: {host: reviews, subset: v1}}]\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("not enforced"),
        "every condition is enforced: {err}"
    );
    let url = "http://reviews:9080/reviews/0";
    let workload = |args: &[&str]| {
        let body = pod_curl(mesh, "productpage-v1", args);
        ["reviews-v1", "reviews-v2", "reviews-v3"]
            .into_iter()
            .find(|v| body.contains(v))
            .unwrap_or("none")
            .to_string()
    };
    let with_v3 = format!("{url}?v=3");
    // Round robin over three versions can look like the new routes for a
    // request or two before they land: wait for several in a row.
    wait_until("the matches to apply", Duration::from_secs(20), || {
        (0..4).all(|_| workload(&["-X", "POST", url]) == "reviews-v2")
            && (0..2).all(|_| workload(&[&with_v3]) == "reviews-v3")
    });
    assert_eq!(workload(&[&with_v3]), "reviews-v3", "query parameter match");
    assert_eq!(
        workload(&["-H", "x-debug: 1", &with_v3]),
        "reviews-v1",
        "withoutHeaders excludes a request carrying the header"
    );
    assert_eq!(workload(&[url]), "reviews-v1");
    let out = weft(&["delete", "vs", "reviews", "--mesh", &mesh.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn shift_all_to_v3_without_errors(mesh: &Mesh, page: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let client = {
        let (stop, sent, failed, page) =
            (stop.clone(), sent.clone(), failed.clone(), page.to_string());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let (code, body) = curl(&page, &[]);
                sent.fetch_add(1, Ordering::Relaxed);
                if code != 200 || !body.contains("reviews-v") {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let out = mesh.apply(&routes("virtual-service-reviews-v3.yaml"));
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The bound: the change is in force within 2 s of apply returning.
    // Ten in a row: before the change, round robin over three versions
    // shows v3 one request in three, which must not pass for the change.
    wait_until("v3 to take over", Duration::from_secs(2), || {
        reviews_seen(page, 10, &[])
            .iter()
            .all(|v| v == "reviews-v3")
    });
    let seen = reviews_seen(page, 100, &[]);
    assert_eq!(
        count(&seen, "reviews-v3"),
        100,
        "all 100 requests after the change go to v3: {seen:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    assert!(
        sent.load(Ordering::Relaxed) > 5,
        "the steady client kept sending"
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the change"
    );
}

/// The JSON a page shows for one part (`details` or `reviews`).
fn page_part(page: &str, part: &str) -> serde_json::Value {
    let prefix = format!("<p>{part}: ");
    let line = page
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {part} on the page:\n{page}"));
    serde_json::from_str(line.trim_end_matches("</p>")).expect("the part is JSON")
}

/// Trace and user headers cross every hop (gateway, sidecars, apps), and
/// every request gets an x-request-id at the gateway that every hop shares.
fn trace_headers_follow_the_chain(page: &str) {
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (code, body) = curl(
        page,
        &[
            "-H",
            "x-request-id: weft-e2e-trace-1",
            "-H",
            &format!("traceparent: {traceparent}"),
            "-H",
            "x-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7",
            "-H",
            "end-user: jason",
        ],
    );
    assert_eq!(code, 200, "{body}");
    let ratings = &page_part(&body, "reviews")["ratings"]["received"];
    // The gateway is the mesh's edge: a client's request id is replaced
    // (Envoy's default, which istiod keeps).
    let id = ratings["x-request-id"].as_str().unwrap_or_default();
    assert!(id.len() == 36 && id != "weft-e2e-trace-1", "{ratings}");
    assert_eq!(ratings["traceparent"], traceparent, "{ratings}");
    assert_eq!(ratings["x-b3-traceid"], "80f198ee56343ba864fe8b2a57d3eff7");
    assert_eq!(ratings["end-user"], "jason");

    let (_, body) = curl(page, &[]);
    let details = &page_part(&body, "details")["received"]["x-request-id"];
    let ratings = &page_part(&body, "reviews")["ratings"]["received"]["x-request-id"];
    assert!(
        details.as_str().is_some_and(|id| id.len() == 36),
        "the gateway adds a UUID x-request-id: {details}"
    );
    assert_eq!(details, ratings, "one request id along the whole chain");
}

fn header_routing(mesh: &Mesh, page: &str) {
    let out = mesh.apply(&routes("virtual-service-reviews-jason-v2-v1.yaml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("jason to see v2", Duration::from_secs(2), || {
        reviews_seen(page, 1, &["-H", "end-user: jason"]) == ["reviews-v2"]
    });
    let jason = reviews_seen(page, 20, &["-H", "end-user: jason"]);
    assert_eq!(count(&jason, "reviews-v2"), 20, "{jason:?}");
    let others = reviews_seen(page, 20, &["-H", "end-user: alice"]);
    assert_eq!(count(&others, "reviews-v1"), 20, "{others:?}");
    let anonymous = reviews_seen(page, 20, &[]);
    assert_eq!(count(&anonymous, "reviews-v1"), 20, "{anonymous:?}");
}

fn weighted_split(mesh: &Mesh, page: &str) {
    let out = mesh.apply(&routes("virtual-service-reviews-80-20.yaml"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the split to start", Duration::from_secs(2), || {
        reviews_seen(page, 20, &["-H", "end-user: jason"])
            .iter()
            .any(|v| v == "reviews-v1")
    });
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.extend(reviews_seen(page, 100, &[]));
    }
    assert_eq!(seen.len(), 1000);
    let v1 = count(&seen, "reviews-v1");
    let v2 = count(&seen, "reviews-v2");
    assert_eq!(v1 + v2, 1000, "only v1 and v2 answer: {v1} + {v2}");
    assert_share("reviews v1", v1, 1000, 0.8);
}

fn bad_yaml_is_refused(mesh: &Mesh, page: &str) {
    let out = mesh.apply_yaml(
        "weft-e2e-bad-route.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v3}\n      weigth: 100\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "apply of a bad document must fail");
    assert!(
        stderr.contains("weft-e2e-bad-route.yaml:10:"),
        "names file:line: {stderr}"
    );
    assert!(stderr.contains("weigth"), "names the bad field: {stderr}");
    assert!(
        stderr.contains("spec.http[0].route[0]"),
        "names the field path: {stderr}"
    );
    // Still the 80/20 split, not v3: nothing from the bad file was stored.
    let seen = reviews_seen(page, 50, &[]);
    assert_eq!(seen.len(), 50);
    assert!(
        count(&seen, "reviews-v1") > 25 && count(&seen, "reviews-v3") == 0,
        "{seen:?}"
    );
}

fn bad_file_keeps_last_good_config(mesh: &Mesh, page: &str) {
    // A broken file dropped into the watched directory is reported with
    // file:line and changes nothing.
    write(&mesh.config_dir, "zz-broken.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: broken}\nspec:\n  host: reviews\n  subsets:\n  - labels: {version: v1}\n");
    let problems_url = format!("{}/debug/problems", mesh.api());
    wait_until(
        "the control plane to report the broken file",
        Duration::from_secs(5),
        || curl(&problems_url, &[]).1.contains("zz-broken.yaml:7:5"),
    );
    let (_, problems) = curl(&problems_url, &[]);
    assert!(problems.contains("spec.subsets[0].name"), "{problems}");
    let seen = reviews_seen(page, 20, &[]);
    assert_eq!(seen.len(), 20, "traffic keeps flowing: {seen:?}");
    std::fs::remove_file(mesh.config_dir.join("zz-broken.yaml")).unwrap();
}

fn unsupported_resource_is_nacked(mesh: &Mesh, page: &str) {
    // outlierDetectionHttpErrorCodes becomes an error_matcher in the
    // cluster's HttpProtocolOptions, as istiod writes it, which this proxy
    // does not implement: every sidecar must NACK it and keep its old config.
    let out = mesh.apply_yaml("weft-e2e-codes.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec:\n  host: ratings\n  trafficPolicy:\n    outlierDetection: {outlierDetectionHttpErrorCodes: [500]}\n  subsets:\n  - name: v1\n    labels: {version: v1}\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let syncz = format!("{}/debug/syncz", mesh.api());
    wait_until(
        "a NACK with its reason on the debug endpoint",
        Duration::from_secs(5),
        || {
            let (_, body) = curl(&syncz, &[]);
            body.contains("error_matcher, Istio's outlierDetectionHttpErrorCodes) is not supported")
                && body.contains("outbound|9080||ratings.default.svc.cluster.local")
        },
    );
    // The status converges: a push the sidecars have not answered yet
    // shows as STALE until their NACKs are in.
    wait_until(
        "proxy-status to show the NACKs",
        Duration::from_secs(5),
        || {
            let status = weft(&["proxy-status", "--mesh", &mesh.name]);
            let text = String::from_utf8_lossy(&status.stdout);
            text.contains("NACKED") && text.contains("outlierDetectionHttpErrorCodes")
        },
    );
    assert_eq!(
        reviews_seen(page, 20, &[]).len(),
        20,
        "traffic keeps flowing on the last accepted config"
    );
    let out = weft(&["delete", "dr", "ratings", "--mesh", &mesh.name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the NACK to clear", Duration::from_secs(5), || {
        !curl(&syncz, &[])
            .1
            .contains("outlierDetectionHttpErrorCodes")
    });
}

fn dead_upstreams_get_response_flags(mesh: &Mesh) {
    // A subset with no endpoints: no healthy upstream (UH).
    let out = mesh.apply_yaml("weft-e2e-empty-subset.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: details}\nspec:\n  host: details\n  subsets:\n  - name: v9\n    labels: {version: v9}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: details}\nspec:\n  hosts: [details]\n  http:\n  - route:\n    - destination: {host: details, subset: v9}\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = format!("{}/productpage", mesh.ingress);
    wait_until(
        "details to have no healthy upstream",
        Duration::from_secs(3),
        || {
            curl(&page, &[])
                .1
                .contains("details: 503 Service Unavailable no healthy upstream")
        },
    );
    // Logs are flushed once a second; on a loaded machine (four meshes at
    // once) a line has come 3 s after its request's answer.
    wait_until("UH in the access log", Duration::from_secs(10), || {
        mesh.log("productpage-v1.sidecar.log").contains("503 UH")
    });
    let _ = weft(&["delete", "vs", "details", "--mesh", &mesh.name]);

    // The ratings app dies: its sidecar cannot connect (UF).
    let pid = mesh
        .recorded_processes()
        .into_iter()
        .zip(app_roles(mesh))
        .find(|(_, role)| role == "app/ratings-v1")
        .map(|((pid, _), _)| pid)
        .expect("ratings app recorded");
    assert!(std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let rating = format!("http://{}:9080/ratings/0", mesh.pod_ip("ratings-v1"));
    wait_until("a 503 from the dead app", Duration::from_secs(3), || {
        curl(&rating, &[]).0 == 503
    });
    wait_until(
        "UF in the ratings sidecar's access log",
        Duration::from_secs(10),
        || mesh.log("ratings-v1.sidecar.log").contains("\" 503 UF "),
    );
}

/// Sidecars and the gateway run `weft-proxy`, the proxy alone (an idle
/// proxy's memory is mostly the code pages it maps).
fn proxies_run_the_proxy_binary(mesh: &Mesh) {
    let state = std::fs::read_to_string(format!("/run/weft/{}/state.json", mesh.name)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    let mut proxies = 0;
    for p in v["processes"].as_array().unwrap() {
        let role = p["role"].as_str().unwrap();
        if !(role.starts_with("sidecar/") || role == "ingress-gateway") {
            continue;
        }
        let exe = std::fs::read_link(format!("/proc/{}/exe", p["pid"])).unwrap();
        assert!(
            exe.ends_with("weft-proxy"),
            "{role} runs {exe:?}, not weft-proxy"
        );
        proxies += 1;
    }
    assert!(proxies > 6, "sidecars and the gateway: {proxies}");
}

fn app_roles(mesh: &Mesh) -> Vec<String> {
    let state = std::fs::read_to_string(format!("/run/weft/{}/state.json", mesh.name)).unwrap();
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["role"].as_str().unwrap().to_string())
        .collect()
}

/// `weft down` removes everything, also after `weft up` was SIGKILLed.
#[test]
fn down_removes_everything_even_after_sigkill() {
    let mut mesh = Mesh::up("e2ekill", 102, 18102);
    let recorded = mesh.recorded_processes();
    assert!(
        recorded.len() >= 14,
        "control plane, gateway, 6 apps and 6 sidecars: {recorded:?}"
    );
    mesh.kill_up_process();
    assert!(
        !leftovers("e2ekill").is_empty(),
        "killing weft up leaves the mesh running"
    );
    let out = mesh.down();
    assert!(
        out.status.success(),
        "weft down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left = leftovers("e2ekill");
    assert!(left.is_empty(), "left behind: {left:?}");
    let alive = still_running(&recorded);
    assert!(alive.is_empty(), "processes still running: {alive:?}");
    let again = weft(&["down", "--name", "e2ekill"]);
    assert!(again.status.success(), "weft down twice is harmless");
}

/// SIGTERM (and Ctrl-C, the same handler) on `weft up` removes the mesh
/// by itself: no `weft down` needed.
#[test]
fn sigterm_on_up_removes_everything() {
    let mut mesh = Mesh::up("e2eterm", 104, 18104);
    let recorded = mesh.recorded_processes();
    let (status, err) = mesh.signal_up_process("TERM");
    assert!(status.success(), "weft up exits cleanly on SIGTERM: {err}");
    assert!(err.contains("mesh \"e2eterm\" removed"), "{err}");
    let left = leftovers("e2eterm");
    assert!(left.is_empty(), "left behind: {left:?}");
    let alive = still_running(&recorded);
    assert!(alive.is_empty(), "processes still running: {alive:?}");
}

/// An app that cannot start fails `weft up` quickly, with the app's own
/// error, and leaves nothing behind.
#[test]
fn a_broken_workload_fails_up_with_its_log() {
    require_root();
    let dir = std::env::temp_dir().join(format!("weft-e2e-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let example = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("../../examples/bookinfo");
    let mesh = std::fs::read_to_string(example.join("mesh.yaml")).unwrap();
    std::fs::write(
        dir.join("mesh.yaml"),
        mesh.replace("demo, ratings,", "demo, ratingz,"),
    )
    .unwrap();
    let started = Instant::now();
    let out = up_to_the_end(&dir, "e2ebad", 103, 18103);
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "weft up must fail");
    assert!(
        err.contains("app/ratings-v1 exited") && err.contains("unknown demo service \"ratingz\""),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "it fails fast, not at the timeout"
    );
    let left = leftovers("e2ebad");
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// `weft up` on ground it cannot use says why at once, and leaves nothing:
/// an ingress port that is taken; config every proxy rejects.
#[test]
fn up_fails_fast_on_a_taken_port_or_rejected_config() {
    require_root();
    let taken = std::net::TcpListener::bind("127.0.0.1:18105").unwrap();
    let example = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("../../examples/bookinfo");
    let up = |dir: &std::path::Path| up_to_the_end(dir, "e2efast", 105, 18105);
    let out = up(&example);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("127.0.0.1:18105 is not free") && err.contains("--ingress-port"),
        "{err}"
    );
    assert!(leftovers("e2efast").is_empty());
    drop(taken);

    let dir = std::env::temp_dir().join(format!("weft-e2e-nack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(example.join("mesh.yaml"), dir.join("mesh.yaml")).unwrap();
    write(&dir, "codes.yaml", "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: ratings}\nspec:\n  host: ratings\n  trafficPolicy: {outlierDetection: {outlierDetectionHttpErrorCodes: [500, 503]}}\n");
    let started = Instant::now();
    let out = up(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("rejected its CDS config") && err.contains("outlierDetectionHttpErrorCodes"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "it fails on the NACK, not at the timeout"
    );
    let left = leftovers("e2efast");
    assert!(left.is_empty(), "left behind: {left:?}");
}
