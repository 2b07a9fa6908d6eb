//! End-to-end: the course's gRPC labs on the Online-Boutique-like shop
//! (`examples/boutique`), with the course's YAML as it is. Each test owns
//! one mesh (subnets 140–149, ingress ports 18140–18149).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::*;

fn routes(file: &str) -> PathBuf {
    PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
        .join("../../examples/boutique/routes")
        .join(file)
}

/// The shop, with `mesh.yaml` passed through `edit`, and without the load
/// generator: these tests count their own calls.
fn shop(name: &str, subnet: u8, edit: impl FnOnce(String) -> String) -> Mesh {
    Mesh::up_edited("boutique", name, subnet, 18000 + u16::from(subnet), |m| {
        edit(without_load_generator(&m))
    })
}

fn without_load_generator(mesh_yaml: &str) -> String {
    let start = mesh_yaml
        .find("- name: loadgenerator")
        .expect("the shop has a load generator");
    let end = mesh_yaml
        .find("\nservices:")
        .expect("services follow workloads");
    assert!(start < end, "the load generator is the last workload");
    format!("{}{}", &mesh_yaml[..start], &mesh_yaml[end + 1..])
}

fn apply(mesh: &Mesh, file: &str) {
    mesh.apply_ok(&routes(file));
}

/// The shop works through the gateway: the home page lists the catalog
/// (productcatalogservice over gRPC) with prices converted
/// (currencyservice), and a product page has recommendations
/// (recommendationservice, which calls productcatalogservice).
#[test]
fn the_shop_serves_over_grpc() {
    let mesh = shop("shop", 140, |m| m);
    let home = format!("{}/", mesh.ingress);
    wait_until("the shop to serve", Duration::from_secs(15), || {
        curl(&home, &[]).0 == 200
    });
    let (_, body) = curl(&home, &["-b", "shop_currency=EUR"]);
    assert!(body.contains("OLJCESPC7Z Sunglasses EUR 17."), "{body}");
    let (code, body) = curl(&format!("{}/product/66VCHSJNUP", mesh.ingress), &[]);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("66VCHSJNUP Tank Top USD 18.99"), "{body}");
    let recommended = body
        .lines()
        .find_map(|l| l.strip_prefix("recommended: "))
        .unwrap_or("");
    assert_eq!(recommended.split(' ').count(), 5, "{body}");
    assert!(!recommended.contains("66VCHSJNUP"), "{body}");
    // A cart and a checkout: cart, catalog, currency, shipping, payment,
    // email and checkout services, each behind its sidecar.
    let me = ["-b", "shop_session-id=e2e"];
    let cart = format!("{}/cart", mesh.ingress);
    let add = |id: &str, n: &str| {
        let form = [
            "-d".to_string(),
            format!("product_id={id}"),
            "-d".into(),
            format!("quantity={n}"),
        ];
        let mut args: Vec<&str> = me.to_vec();
        args.extend(form.iter().map(String::as_str));
        curl(&cart, &args)
    };
    assert_eq!(add("OLJCESPC7Z", "2").0, 200);
    let (code, body) = add("9SIQT8TOJO", "1");
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("OLJCESPC7Z x2") && body.contains("9SIQT8TOJO x1"),
        "{body}"
    );
    let (code, body) = curl(&home, &me);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("cart: 3 items") && body.contains("ad: "),
        "{body}"
    );
    let mut args = me.to_vec();
    args.extend(["-X", "POST"]);
    let (code, body) = curl(&format!("{cart}/checkout"), &args);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("Your order is complete!") && body.contains("tracking track-"),
        "{body}"
    );
    let (_, body) = curl(&cart, &me);
    assert!(!body.contains(" x"), "the cart is emptied: {body}");
    std::thread::sleep(Duration::from_millis(1500)); // logs flush
    assert!(
        mesh.log("emailservice.log")
            .contains("order confirmation order-"),
        "{}",
        mesh.log("emailservice.log")
    );
}

/// Traffic splitting between frontend v1 and v2 (75/25) at the gateway.
#[test]
fn weighted_routing_between_frontend_versions() {
    let mesh = shop("split", 141, |m| m);
    let home = format!("{}/_healthz", mesh.ingress);
    wait_until("the shop to serve", Duration::from_secs(15), || {
        curl(&home, &[]).0 == 200
    });
    apply(&mesh, "frontend-v1-v2.yaml");
    // 200 requests on one connection; each answer names its workload.
    let v2_share = || {
        let urls = vec![home.as_str(); 200];
        let out = std::process::Command::new("curl")
            .args(["-s", "-m", "60", "-D", "-"])
            .args(&urls)
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        assert_eq!(text.matches("x-workload: frontend-").count(), 200, "{text}");
        text.matches("x-workload: frontend-v2").count()
    };
    wait_until("the split to apply", Duration::from_secs(10), || {
        (20..=80).contains(&v2_share())
    });
    let v2 = v2_share();
    assert_share("to frontend v2", v2, 200, 0.25);
}

/// A gRPC abort on productcatalogservice: the frontend's call fails with
/// UNAVAILABLE and the home page is Online Boutique's 500; the frontend's
/// sidecar logs the abort (FI).
#[test]
fn grpc_abort_on_productcatalog() {
    let mesh = shop("abort", 142, |m| m);
    let home = format!("{}/", mesh.ingress);
    wait_until("the shop to serve", Duration::from_secs(15), || {
        curl(&home, &[]).0 == 200
    });
    apply(&mesh, "productcatalog-abort.yaml");
    // Both frontends' sidecars must have it: ten aborted pages in a row.
    wait_until("the abort to apply", Duration::from_secs(30), || {
        (0..10).all(|_| curl(&home, &[]).0 == 500)
    });
    let (_, body) = curl(&home, &[]);
    assert!(
        body.contains("could not retrieve products: rpc error: code = Unavailable"),
        "{body}"
    );
    std::thread::sleep(Duration::from_millis(1500)); // one access-log flush
    let log = mesh.log("frontend-v1.sidecar.log") + &mesh.log("frontend-v2.sidecar.log");
    assert!(
        log.contains("/hipstershop.ProductCatalogService/ListProducts HTTP/2\" 200 FI"),
        "{log}"
    );
}

/// A 5 s delay on half of the calls to recommendationservice: of 20
/// product pages loaded at once (one call each), about half take 5 s or more.
#[test]
fn delay_on_recommendation_for_half() {
    const LOADS: usize = 20;
    let mesh = shop("delay", 143, |m| m);
    let page = format!("{}/product/OLJCESPC7Z", mesh.ingress);
    wait_until("the shop to serve", Duration::from_secs(15), || {
        curl(&page, &[]).0 == 200
    });
    apply(&mesh, "recommendation-delay.yaml");
    let slow_share = || {
        let loads: Vec<_> = (0..LOADS)
            .map(|_| {
                let page = page.clone();
                std::thread::spawn(move || {
                    let start = std::time::Instant::now();
                    let (code, _) = curl(&page, &[]);
                    (code, start.elapsed())
                })
            })
            .collect();
        let done: Vec<_> = loads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(done.iter().all(|(c, _)| *c == 200), "{done:?}");
        done.iter()
            .filter(|(_, t)| *t >= Duration::from_secs(5))
            .count()
    };
    wait_until("the delay to apply", Duration::from_secs(30), || {
        slow_share() > 0
    });
    assert_share("pages delayed", slow_share(), LOADS, 0.5);
}

/// productcatalogservice slowed by Online Boutique's latency knob (3 s),
/// under a 2 s timeout with two retries of 0.5 s each: the home page fails
/// fast with the router's UNAVAILABLE "upstream request timeout", and the
/// catalog's sidecar saw each call three times.
#[test]
fn timeout_and_retries_on_a_slow_productcatalog() {
    let mesh = shop("retry", 144, |m| {
        m.replace("EXTRA_LATENCY: \"0s\"", "EXTRA_LATENCY: \"3s\"")
    });
    let home = format!("{}/", mesh.ingress);
    wait_until(
        "the shop to serve (slowly)",
        Duration::from_secs(20),
        || curl(&home, &[]).0 == 200,
    );
    apply(&mesh, "productcatalog-timeout-retries.yaml");
    wait_until("the timeout to apply", Duration::from_secs(15), || {
        curl(&home, &[]).0 == 500
    });
    std::thread::sleep(Duration::from_millis(1500)); // one access-log flush
    let before = mesh
        .log("productcatalogservice.sidecar.log")
        .matches("ListProducts")
        .count();
    let start = std::time::Instant::now();
    let (code, body) = curl(&home, &[]);
    let took = start.elapsed();
    assert_eq!(code, 500, "{body}");
    assert!(
        body.contains("code = Unavailable desc = upstream request timeout"),
        "{body}"
    );
    assert!(
        took < Duration::from_secs(3),
        "fails before the 3 s latency: {took:?}"
    );
    std::thread::sleep(Duration::from_millis(1500)); // one access-log flush
    let after = mesh
        .log("productcatalogservice.sidecar.log")
        .matches("ListProducts")
        .count();
    assert_eq!(after - before, 3, "one try and two retries");
    let log = mesh.log("frontend-v1.sidecar.log") + &mesh.log("frontend-v2.sidecar.log");
    assert!(log.contains("UT,URX") || log.contains("URX"), "{log}");
}

/// Online Boutique's load generator drives the shop through its sidecar:
/// every kind of visit (home, currency, product, cart, checkout) happens,
/// and none fails.
#[test]
fn the_load_generator_drives_the_shop() {
    let mesh = Mesh::up_edited("boutique", "loadgen", 145, 18145, |m| {
        m.replace(
            "USERS: \"10\", WAIT_TIME: \"1-10\"",
            "USERS: \"4\", WAIT_TIME: \"0.05-0.2\"",
        )
    });
    let summary = || {
        mesh.log("loadgenerator.log")
            .lines()
            .rev()
            .find(|l| l.contains(" requests, "))
            .map(str::to_string)
    };
    let count = |line: &str, what: &str| -> u64 {
        let at = line
            .find(what)
            .unwrap_or_else(|| panic!("{what} in {line}"));
        let rest = &line[at + what.len()..];
        rest.trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    // "… N requests, M failed; …": N.
    let requests = |line: &str| -> u64 {
        let head = &line[..line.find(" requests, ").unwrap()];
        head.rsplit(' ').next().unwrap().parse().unwrap()
    };
    wait_until(
        "a checkout by the load generator",
        Duration::from_secs(40),
        || summary().is_some_and(|l| count(&l, "checkout") > 0),
    );
    let warm = summary().unwrap();
    for task in [
        "index",
        "setCurrency",
        "browseProduct",
        "addToCart",
        "viewCart",
    ] {
        assert!(count(&warm, task) > 0, "{task}: {warm}");
    }
    // Once the mesh is warm (every sidecar synced), nothing fails: later
    // summaries add requests and no failure.
    let failed = count(&warm, "requests,");
    wait_until("more visits", Duration::from_secs(20), || {
        summary().is_some_and(|l| requests(&l) > requests(&warm) + 50)
    });
    let later = summary().unwrap();
    assert_eq!(
        count(&later, "requests,"),
        failed,
        "no new failures: {later}\n{}",
        mesh.log("loadgenerator.log")
    );
}
