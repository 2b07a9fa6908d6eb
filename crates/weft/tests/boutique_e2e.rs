//! End-to-end: the course's gRPC labs on the Online-Boutique-like shop
//! (`examples/boutique`), with the course's YAML as it is. Each test owns
//! one mesh (subnets 140–149, ingress ports 18140–18149).

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::*;

fn routes(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/boutique/routes")
        .join(file)
}

fn apply(mesh: &Mesh, file: &str) {
    let out = mesh.apply(&routes(file));
    assert!(
        out.status.success(),
        "{file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shop works through the gateway: the home page lists the catalog
/// (productcatalogservice over gRPC) with prices converted
/// (currencyservice), and a product page has recommendations
/// (recommendationservice, which calls productcatalogservice).
#[test]
fn the_shop_serves_over_grpc() {
    let mesh = Mesh::up_example("boutique", "shop", 140, 18140);
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
}

/// Traffic splitting between frontend v1 and v2 (75/25) at the gateway.
#[test]
fn weighted_routing_between_frontend_versions() {
    let mesh = Mesh::up_example("boutique", "split", 141, 18141);
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
    assert!((30..=70).contains(&v2), "about 50 of 200 to v2, got {v2}");
}

/// A gRPC abort on productcatalogservice: the frontend's call fails with
/// UNAVAILABLE and the home page is Online Boutique's 500; the frontend's
/// sidecar logs the abort (FI).
#[test]
fn grpc_abort_on_productcatalog() {
    let mesh = Mesh::up_example("boutique", "abort", 142, 18142);
    let home = format!("{}/", mesh.ingress);
    wait_until("the shop to serve", Duration::from_secs(15), || {
        curl(&home, &[]).0 == 200
    });
    apply(&mesh, "productcatalog-abort.yaml");
    wait_until("the abort to apply", Duration::from_secs(10), || {
        curl(&home, &[]).0 == 500
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
