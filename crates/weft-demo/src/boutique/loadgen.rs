//! Online Boutique's load generator: simulated visitors of the frontend,
//! each with its own session and currency cookies, doing what Online
//! Boutique's locustfile has them do, with its weights: home page 1, set
//! currency 2, browse a product 10, add to cart 2, view cart 3, check out
//! 1, and a wait between tasks. Configured as Online Boutique's is, by
//! environment: `FRONTEND_ADDR` (host:port, default `frontend:80`),
//! `USERS` (default 10), and `WAIT_TIME` (`MIN-MAX` seconds, default
//! `1-10`). It starts once the frontend's home page answers. Every five
//! seconds it logs what it did and how much failed, and it logs every
//! failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use super::{CATALOG, RATES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Index,
    SetCurrency,
    BrowseProduct,
    AddToCart,
    ViewCart,
    Checkout,
}

/// Online Boutique's locustfile weights.
const TASKS: &[(Task, u32)] = &[
    (Task::Index, 1),
    (Task::SetCurrency, 2),
    (Task::BrowseProduct, 10),
    (Task::AddToCart, 2),
    (Task::ViewCart, 3),
    (Task::Checkout, 1),
];

fn pick() -> Task {
    let total: u32 = TASKS.iter().map(|(_, w)| w).sum();
    let mut n = fastrand::u32(..total);
    for (task, weight) in TASKS {
        if n < *weight {
            return *task;
        }
        n -= weight;
    }
    unreachable!("n is below the total weight")
}

#[derive(Default)]
struct Stats {
    /// Tasks done, by `Task as usize`.
    tasks: [AtomicU64; 6],
    requests: AtomicU64,
    failed: AtomicU64,
}

impl Stats {
    fn summary(&self) -> String {
        let n = |t: Task| self.tasks[t as usize].load(Ordering::Relaxed);
        format!(
            "{} requests, {} failed; index {}, setCurrency {}, browseProduct {}, addToCart {}, viewCart {}, checkout {}",
            self.requests.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            n(Task::Index),
            n(Task::SetCurrency),
            n(Task::BrowseProduct),
            n(Task::AddToCart),
            n(Task::ViewCart),
            n(Task::Checkout),
        )
    }
}

/// What the load generator reads from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub frontend: String,
    pub users: u32,
    pub wait: (Duration, Duration),
}

impl Settings {
    pub fn from_env() -> anyhow::Result<Settings> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Settings::parse(
            var("FRONTEND_ADDR").as_deref(),
            var("USERS").as_deref(),
            var("WAIT_TIME").as_deref(),
        )
    }

    fn parse(
        frontend: Option<&str>,
        users: Option<&str>,
        wait: Option<&str>,
    ) -> anyhow::Result<Settings> {
        let users = match users {
            Some(u) => u
                .parse()
                .map_err(|_| anyhow::anyhow!("USERS={u:?}: a number of users"))?,
            None => 10,
        };
        let wait = match wait {
            Some(w) => {
                let bad =
                    || anyhow::anyhow!("WAIT_TIME={w:?}: MIN-MAX seconds, as 1-10 or 0.1-0.5");
                let (lo, hi) = w.split_once('-').ok_or_else(bad)?;
                // At most a day: a wait is a pause, not a stop.
                let secs = |s: &str| {
                    s.trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|s| (0.0..=86_400.0).contains(s))
                };
                let (lo, hi) = (secs(lo).ok_or_else(bad)?, secs(hi).ok_or_else(bad)?);
                if lo > hi {
                    return Err(bad());
                }
                (Duration::from_secs_f64(lo), Duration::from_secs_f64(hi))
            }
            None => (Duration::from_secs(1), Duration::from_secs(10)),
        };
        Ok(Settings {
            frontend: frontend.unwrap_or("frontend:80").to_string(),
            users,
            wait,
        })
    }
}

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(?settings, "load generator starting");
    let stats = Arc::new(Stats::default());
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    wait_for_frontend(&client, &settings.frontend).await;
    for i in 0..settings.users {
        let visitor = Visitor {
            client: client.clone(),
            base: format!("http://{}", settings.frontend),
            session: format!("loadgen-{i}-{}", fastrand::u32(..)),
            currency: "USD".into(),
            stats: stats.clone(),
        };
        tokio::spawn(visitor.visit(settings.wait));
    }
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.tick().await;
    loop {
        every.tick().await;
        tracing::info!("{}", stats.summary());
    }
}

/// As Online Boutique's init container does: no visits until the frontend
/// answers, here with its home page (which needs the catalog, currency and
/// ad services behind it).
async fn wait_for_frontend(client: &Client<HttpConnector, Full<Bytes>>, frontend: &str) {
    let url = format!("http://{frontend}/");
    loop {
        let req = Request::get(&url)
            .body(Full::default())
            .expect("a valid request");
        match client.request(req).await {
            Ok(r) if r.status() == StatusCode::OK => return,
            Ok(r) => tracing::info!(status = %r.status(), "waiting for the frontend"),
            Err(e) => tracing::info!(error = %e, "waiting for the frontend"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

struct Visitor {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    session: String,
    currency: String,
    stats: Arc<Stats>,
}

impl Visitor {
    /// Online Boutique's visitor: the home page first, then tasks forever.
    async fn visit(mut self, (lo, hi): (Duration, Duration)) {
        self.run(Task::Index).await;
        loop {
            let wait = lo + (hi - lo).mul_f64(fastrand::f64());
            tokio::time::sleep(wait).await;
            self.run(pick()).await;
        }
    }

    async fn run(&mut self, task: Task) {
        let product = || CATALOG[fastrand::usize(..CATALOG.len())].0;
        match task {
            Task::Index => self.send(Method::GET, "/", "").await,
            Task::SetCurrency => {
                let code = RATES[fastrand::usize(..RATES.len())].0;
                self.send(
                    Method::POST,
                    "/setCurrency",
                    &format!("currency_code={code}"),
                )
                .await;
                self.currency = code.to_string();
            }
            Task::BrowseProduct => {
                self.send(Method::GET, &format!("/product/{}", product()), "")
                    .await
            }
            Task::ViewCart => self.send(Method::GET, "/cart", "").await,
            Task::AddToCart => self.add_to_cart(product()).await,
            Task::Checkout => {
                self.add_to_cart(product()).await;
                self.send(Method::POST, "/cart/checkout", CHECKOUT_FORM)
                    .await;
            }
        }
        self.stats.tasks[task as usize].fetch_add(1, Ordering::Relaxed);
    }

    async fn add_to_cart(&self, product: &str) {
        self.send(Method::GET, &format!("/product/{product}"), "")
            .await;
        let form = format!("product_id={product}&quantity={}", fastrand::u32(1..=10));
        self.send(Method::POST, "/cart", &form).await;
    }

    /// One request with this visitor's cookies; anything but a 2xx or a
    /// redirect counts as failed and is logged.
    async fn send(&self, method: Method, path: &str, form: &str) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(
                http::header::COOKIE,
                format!(
                    "shop_session-id={}; shop_currency={}",
                    self.session, self.currency
                ),
            )
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(form.to_string())))
            .expect("a valid request");
        let outcome = match self.client.request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                match status.is_success() || status.is_redirection() {
                    true => Ok(()),
                    false => Err(format!(
                        "{status}: {}",
                        first_lines(&body.unwrap_or_default())
                    )),
                }
            }
            Err(e) => Err(format!("{}: {e}", StatusCode::BAD_GATEWAY.as_str())),
        };
        if let Err(why) = outcome {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("{method} {path} failed: {why}");
        }
    }
}

/// Online Boutique's checkout form (a test card).
const CHECKOUT_FORM: &str = "email=someone%40example.com&street_address=1600+Amphitheatre+Parkway&zip_code=94043&city=Mountain+View&state=CA&country=United+States&credit_card_number=4432-8015-6152-0454&credit_card_expiration_month=1&credit_card_expiration_year=2039&credit_card_cvv=672";

/// The first lines of an error page, on one line, for the log.
fn first_lines(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_online_boutiques_variables() {
        let d = Settings::parse(None, None, None).unwrap();
        assert_eq!(d.frontend, "frontend:80");
        assert_eq!(d.users, 10);
        assert_eq!(d.wait, (Duration::from_secs(1), Duration::from_secs(10)));
        let s = Settings::parse(Some("frontend:8080"), Some("3"), Some("0.1-0.5")).unwrap();
        assert_eq!(s.users, 3);
        assert_eq!(s.wait.1, Duration::from_millis(500));
        let e = Settings::parse(None, Some("many"), None).unwrap_err();
        assert!(e.to_string().contains("USERS=\"many\""), "{e}");
        assert!(Settings::parse(None, None, Some("5-1")).is_err());
        assert!(Settings::parse(None, None, Some("5")).is_err());
        assert!(Settings::parse(None, None, Some("inf-inf")).is_err());
    }

    #[test]
    fn tasks_follow_the_locustfile_weights() {
        let mut browse = 0;
        for _ in 0..19_000 {
            if pick() == Task::BrowseProduct {
                browse += 1;
            }
        }
        // 10 of 19.
        assert!((9_000..11_000).contains(&browse), "{browse}");
    }
}
