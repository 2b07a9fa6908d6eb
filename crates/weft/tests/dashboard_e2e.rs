//! End-to-end: the built-in dashboard in a real browser. Bookinfo with
//! traffic and Istio's ratings abort for jason; headless Chromium (Debian's
//! package) loads `weft dashboard`'s URL and runs its script: the service
//! graph shows the demo's edges with non-zero rates, the failed request
//! is listed with its response flag, and, with Istio's Zipkin tracing on,
//! a request's trace shows its hops nested. Subnet 151, ingress port
//! 18151.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Istio's Zipkin task's provider.
const ZIPKIN: &str = "extensionProviders:
- name: zipkin
  zipkin:
    service: zipkin.istio-system.svc.cluster.local
    port: 9411
";

const ABORT: &str =
    include_str!("../../../examples/bookinfo/routes/virtual-service-ratings-test-abort.yaml");

/// The page after its script ran (Chromium's `--dump-dom`).
fn rendered(url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            // Under the page's 3 s refresh: one fetch, one render.
            "--virtual-time-budget=2500",
        ])
        .args(["--dump-dom", url])
        .output()
        .expect("chromium is not installed: run scripts/test.sh, which installs it");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn drive(mesh: &Mesh, seconds: u64, extra: &[&str]) {
    let page = format!("{}/productpage", mesh.ingress);
    let end = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < end {
        curl(&page, extra);
    }
}

#[test]
fn the_dashboard_shows_the_mesh_in_chromium() {
    let mesh = Mesh::up_edited("bookinfo", "dash", 151, 18151, with_zipkin);
    ok(mesh.apply_yaml("mesh-config.yaml", &istio_config_map(ZIPKIN)));
    ok(mesh.apply_yaml("telemetry.yaml", TRACE_EVERYTHING));
    let out = weft(&["dashboard", "--mesh", "dash"]);
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(url, "http://198.18.151.1:15014/dashboard");
    ok(mesh.apply_yaml("ratings-abort.yaml", ABORT));
    wait_until("the abort for jason", Duration::from_secs(20), || {
        curl(
            &format!("{}/productpage", mesh.ingress),
            &["-H", "end-user: jason"],
        )
        .1
        .contains("Ratings service is currently unavailable")
    });
    drive(&mesh, 2, &[]);
    // A first scrape, so that the page's is a second one with rates.
    let (code, _) = curl("http://198.18.151.1:15014/api/v1/dashboard", &[]);
    assert_eq!(code, 200);
    drive(&mesh, 2, &["-H", "end-user: jason"]);
    // Traffic goes on while Chromium renders: whichever earlier scrape the
    // page's rates are taken against, requests came after it.
    let done = std::sync::atomic::AtomicBool::new(false);
    let page = format!("{}/productpage", mesh.ingress);
    let dom = std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                curl(&page, &[]);
            }
        });
        let dom = rendered(&url);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        dom
    });
    for edge in [
        "istio-ingressgateway -> productpage",
        "productpage-v1 -> details",
        "productpage-v1 -> reviews",
    ] {
        // The DOM dump escapes `>` in attributes.
        let attr = format!("data-edge=\"{}\"", edge.replace('>', "&gt;"));
        assert!(dom.contains(&attr), "{edge} in\n{dom}");
    }
    // The gateway → productpage row has a rate above zero.
    let row = dom
        .split("<tr>")
        .find(|r| r.contains("<td>istio-ingressgateway</td><td>productpage</td>"))
        .unwrap_or_else(|| panic!("no gateway row in\n{dom}"));
    let rate: f64 = row
        .split("class=\"num rps\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {row}"));
    assert!(rate > 0.0, "{row}");
    // The abort, as reviews' sidecar saw it: 500 with FI.
    let failures = dom.split("id=\"failures\"").nth(1).unwrap_or_default();
    assert!(
        failures.contains("<td class=\"flags\">FI</td>")
            && failures.contains("ratings:9080/ratings/0")
            && failures.contains("outbound|9080|v1|ratings.default.svc.cluster.local"),
        "{failures}"
    );
    assert!(dom.contains("SYNCED"), "proxies' sync status: {dom}");
    // A product page's trace: the gateway's SERVER span, productpage's
    // under it, and under that (deeper) details' SERVER span, as the
    // proxies reported them. The
    // newest traces may still be in flight (productpage's SERVER span is
    // reported last, when its response ends): take a whole one.
    let traces = dom.split("id=\"traces\"").nth(1).unwrap_or_default();
    let traces = traces.split("</table>").next().unwrap_or_default();
    let trace = traces
        .split("<tr class=\"trace\"")
        .find(|t| {
            t.contains("<td>details.default</td><td>SERVER</td>")
                && t.contains("<td>productpage.default</td><td>SERVER</td>")
                && t.contains("<td>istio-ingressgateway.istio-system</td><td>SERVER</td>")
        })
        .unwrap_or_else(|| panic!("no trace through productpage and details in\n{traces}"));
    let indent = |service: &str| -> f64 {
        let row = trace
            .split("<tr class=\"span\">")
            .find(|r| r.contains(&format!("<td>{service}</td><td>SERVER</td>")))
            .unwrap_or_else(|| panic!("no {service} SERVER span in {trace}"));
        row.split("padding-left: ")
            .nth(1)
            .and_then(|r| r.split("em").next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no indent in {row}"))
    };
    assert!(
        indent("details.default") > indent("productpage.default"),
        "details is nested under productpage: {trace}"
    );
    // The gateway's own spans too (its admin port is on the host bridge):
    // the request's root, productpage under it.
    assert!(
        indent("productpage.default") > indent("istio-ingressgateway.istio-system"),
        "productpage is nested under the gateway: {trace}"
    );
}
