//! The part of CEL that access-log filters are written in (Istio's
//! Telemetry `accessLogging.filter.expression`, which istiod hands to
//! Envoy's CEL filter): `&&`, `||`, `!`, parentheses, comparisons, the
//! string methods `startsWith`/`endsWith`/`contains`, literals, and Envoy's
//! request/response/connection attributes. Compiled once per config;
//! anything outside the subset is refused at compile time, so a filter
//! never silently logs everything or nothing.

use super::Entry;

#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp(Cmp, Box<Expr>, Box<Expr>),
    Method(StrMethod, Box<Expr>, Box<Expr>),
    Attr(Attr),
    Lit(Val),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum StrMethod {
    StartsWith,
    EndsWith,
    Contains,
}

#[derive(Debug, Clone)]
pub(crate) enum Attr {
    ResponseCode,
    ResponseCodeDetails,
    Method,
    Path,
    UrlPath,
    Host,
    Protocol,
    RequestId,
    /// Index into the entry's captured request headers.
    RequestHeader(usize),
    Duration,
    SourceAddress,
    SourcePort,
    DestinationAddress,
    DestinationPort,
    UpstreamAddress,
    Mtls,
    RequestedServerName,
    ClusterName,
    RouteName,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Int(i64),
    Str(String),
    Bool(bool),
    Null,
}

pub(crate) fn parse(text: &str, wanted: &mut super::format::Wanted) -> Result<Expr, String> {
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens: &tokens,
        at: 0,
        depth: 0,
        wanted,
    };
    let e = p.or()?;
    match p.tokens.get(p.at) {
        None => Ok(e),
        Some(t) => Err(format!("filter {text:?}: unexpected {t:?}")),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Op(&'static str),
}

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    const OPS: [&str; 15] = [
        "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", ".", ",",
    ];
    let mut out = Vec::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let end = text[i + 1..]
                .find(c)
                .ok_or_else(|| format!("filter {text:?}: unterminated string"))?;
            out.push(Tok::Str(text[i + 1..i + 1 + end].to_string()));
            i += end + 2;
        } else if c.is_ascii_digit() {
            let end = text[i..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(text.len(), |e| i + e);
            let n = text[i..end].parse().map_err(|e| format!("{e}"))?;
            out.push(Tok::Int(n));
            // CEL's unsigned suffix.
            i = if b.get(end) == Some(&b'u') {
                end + 1
            } else {
                end
            };
        } else if c.is_ascii_alphabetic() || c == '_' {
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(text.len(), |e| i + e);
            out.push(Tok::Ident(text[i..end].to_string()));
            i = end;
        } else if let Some(op) = OPS.iter().find(|op| text[i..].starts_with(**op)) {
            out.push(Tok::Op(op));
            i += op.len();
        } else {
            return Err(format!("filter {text:?}: unexpected {c:?}"));
        }
    }
    Ok(out)
}

/// Nesting deeper than this is refused (a stack overflow otherwise).
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    tokens: &'a [Tok],
    at: usize,
    depth: usize,
    wanted: &'a mut super::format::Wanted,
}

impl Parser<'_> {
    fn eat(&mut self, op: &str) -> bool {
        let hit = matches!(self.tokens.get(self.at), Some(Tok::Op(o)) if *o == op);
        self.at += usize::from(hit);
        hit
    }

    fn expect(&mut self, op: &str) -> Result<(), String> {
        match self.eat(op) {
            true => Ok(()),
            false => Err(format!("filter: expected {op:?} at token {}", self.at + 1)),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        while self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("filter: nested deeper than {MAX_DEPTH}"));
        }
        let e = self.unary_inner();
        self.depth -= 1;
        e
    }

    fn unary_inner(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        let left = self.postfix()?;
        let cmp = [
            ("==", Cmp::Eq),
            ("!=", Cmp::Ne),
            ("<=", Cmp::Le),
            (">=", Cmp::Ge),
            ("<", Cmp::Lt),
            (">", Cmp::Gt),
        ]
        .into_iter()
        .find(|(op, _)| self.eat(op));
        match cmp {
            Some((_, c)) => Ok(Expr::Cmp(c, Box::new(left), Box::new(self.postfix()?))),
            None => Ok(left),
        }
    }

    /// A primary, then `.startsWith(…)` and the like.
    fn postfix(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        while self.eat(".") {
            let method = match self.tokens.get(self.at) {
                Some(Tok::Ident(m)) if m == "startsWith" => StrMethod::StartsWith,
                Some(Tok::Ident(m)) if m == "endsWith" => StrMethod::EndsWith,
                Some(Tok::Ident(m)) if m == "contains" => StrMethod::Contains,
                t => return Err(format!("filter: method {t:?} is not supported")),
            };
            self.at += 1;
            self.expect("(")?;
            let arg = self.or()?;
            self.expect(")")?;
            e = Expr::Method(method, Box::new(e), Box::new(arg));
        }
        Ok(e)
    }

    fn primary(&mut self) -> Result<Expr, String> {
        if self.eat("(") {
            let e = self.or()?;
            self.expect(")")?;
            return Ok(e);
        }
        let tok = self.tokens.get(self.at).cloned();
        self.at += 1;
        match tok {
            Some(Tok::Int(n)) => Ok(Expr::Lit(Val::Int(n))),
            Some(Tok::Str(s)) => Ok(Expr::Lit(Val::Str(s))),
            Some(Tok::Ident(id)) if id == "true" || id == "false" => {
                Ok(Expr::Lit(Val::Bool(id == "true")))
            }
            Some(Tok::Ident(id)) if id == "null" => Ok(Expr::Lit(Val::Null)),
            Some(Tok::Ident(root)) => self.attribute(root),
            t => Err(format!("filter: unexpected {t:?}")),
        }
    }

    fn attribute(&mut self, root: String) -> Result<Expr, String> {
        self.expect(".")?;
        let Some(Tok::Ident(field)) = self.tokens.get(self.at).cloned() else {
            return Err(format!("filter: {root}. needs a field"));
        };
        self.at += 1;
        let attr = match (root.as_str(), field.as_str()) {
            ("response", "code") => Attr::ResponseCode,
            ("response", "code_details") => Attr::ResponseCodeDetails,
            ("request", "method") => Attr::Method,
            ("request", "path") => Attr::Path,
            ("request", "url_path") => Attr::UrlPath,
            ("request", "host") => Attr::Host,
            ("request", "protocol") => Attr::Protocol,
            ("request", "id") => Attr::RequestId,
            ("request", "duration") => Attr::Duration,
            ("request", "useragent") => self.header("user-agent")?,
            ("request", "referer") => self.header("referer")?,
            ("request", "headers") => {
                self.expect("[")?;
                let Some(Tok::Str(name)) = self.tokens.get(self.at).cloned() else {
                    return Err("filter: request.headers[…] needs a quoted name".into());
                };
                self.at += 1;
                self.expect("]")?;
                self.header(&name)?
            }
            ("source", "address") => Attr::SourceAddress,
            ("source", "port") => Attr::SourcePort,
            ("destination", "address") => Attr::DestinationAddress,
            ("destination", "port") => Attr::DestinationPort,
            ("upstream", "address") => Attr::UpstreamAddress,
            ("connection", "mtls") => Attr::Mtls,
            ("connection", "requested_server_name") => Attr::RequestedServerName,
            ("xds", "cluster_name") => Attr::ClusterName,
            ("xds", "route_name") => Attr::RouteName,
            _ => {
                return Err(format!(
                    "filter: attribute {root}.{field} is not supported by this version of Weft"
                ))
            }
        };
        Ok(Expr::Attr(attr))
    }

    fn header(&mut self, name: &str) -> Result<Attr, String> {
        let h = http::HeaderName::try_from(name.to_ascii_lowercase())
            .map_err(|_| format!("filter: {name:?} is not a header name"))?;
        let list = &mut self.wanted.request;
        let i = match list.iter().position(|n| *n == h) {
            Some(i) => i,
            None => {
                list.push(h);
                list.len() - 1
            }
        };
        Ok(Attr::RequestHeader(i))
    }
}

impl Expr {
    /// Whether the entry passes; an error (a type mismatch, a missing
    /// attribute compared by order) is false, as Envoy's CEL filter does.
    pub fn matches(&self, e: &Entry) -> bool {
        self.eval(e) == Val::Bool(true)
    }

    fn eval(&self, e: &Entry) -> Val {
        match self {
            Expr::Or(a, b) => Val::Bool(a.matches(e) || b.matches(e)),
            Expr::And(a, b) => Val::Bool(a.matches(e) && b.matches(e)),
            Expr::Not(a) => match a.eval(e) {
                Val::Bool(b) => Val::Bool(!b),
                _ => Val::Null,
            },
            Expr::Cmp(c, a, b) => compare(*c, a.eval(e), b.eval(e)),
            Expr::Method(m, s, arg) => match (s.eval(e), arg.eval(e)) {
                (Val::Str(s), Val::Str(a)) => Val::Bool(match m {
                    StrMethod::StartsWith => s.starts_with(&a),
                    StrMethod::EndsWith => s.ends_with(&a),
                    StrMethod::Contains => s.contains(&a),
                }),
                _ => Val::Null,
            },
            Expr::Attr(a) => a.value(e),
            Expr::Lit(v) => v.clone(),
        }
    }
}

fn compare(c: Cmp, a: Val, b: Val) -> Val {
    use std::cmp::Ordering::*;
    // A missing attribute is an error in CEL, whatever the comparison.
    if a == Val::Null || b == Val::Null {
        return Val::Null;
    }
    let order = match (&a, &b) {
        (Val::Int(x), Val::Int(y)) => x.cmp(y),
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
        (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
        // Unequal types: equal never, ordered never.
        _ => {
            return match c {
                Cmp::Eq => Val::Bool(false),
                Cmp::Ne => Val::Bool(true),
                _ => Val::Null,
            }
        }
    };
    Val::Bool(match c {
        Cmp::Eq => order == Equal,
        Cmp::Ne => order != Equal,
        Cmp::Lt => order == Less,
        Cmp::Le => order != Greater,
        Cmp::Gt => order == Greater,
        Cmp::Ge => order != Less,
    })
}

impl Attr {
    fn value(&self, e: &Entry) -> Val {
        // A TCP connection has no request attributes.
        let http = !e.method.is_empty();
        let s = |v: &str| {
            if http {
                Val::Str(v.to_string())
            } else {
                Val::Null
            }
        };
        let opt = |v: Option<String>| v.map_or(Val::Null, Val::Str);
        match self {
            Attr::ResponseCode => Val::Int(i64::from(e.status)),
            Attr::ResponseCodeDetails => opt(e.details().map(str::to_string)),
            Attr::Method => s(&e.method),
            Attr::Path => s(&e.path),
            Attr::UrlPath => s(e.path.split('?').next().unwrap_or("")),
            Attr::Host => s(&e.authority),
            Attr::Protocol => s(e.protocol),
            Attr::RequestId => s(&e.request_id),
            Attr::RequestHeader(i) => opt(e
                .request_headers
                .get(*i)
                .and_then(|v| v.as_ref()?.to_str().ok())
                .map(str::to_string)),
            Attr::Duration => Val::Int(e.duration.as_millis() as i64),
            Attr::SourceAddress => opt(e.downstream.map(|a| a.ip().to_string())),
            Attr::SourcePort => e
                .downstream
                .map_or(Val::Null, |a| Val::Int(a.port().into())),
            Attr::DestinationAddress => opt(e.downstream_local.map(|a| a.ip().to_string())),
            Attr::DestinationPort => e
                .downstream_local
                .map_or(Val::Null, |a| Val::Int(a.port().into())),
            Attr::UpstreamAddress => opt(e.upstream.map(|a| a.ip().to_string())),
            Attr::Mtls => Val::Bool(e.peer_principal.is_some()),
            Attr::RequestedServerName => opt(e.server_name.clone()),
            Attr::ClusterName => Val::Str(e.cluster.to_string()),
            Attr::RouteName => Val::Str(e.route.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: u16, path: &str) -> Entry {
        Entry {
            status,
            method: "GET".into(),
            path: path.into(),
            ..Default::default()
        }
    }

    fn check(expr: &str, e: &Entry) -> bool {
        parse(expr, &mut Default::default()).unwrap().matches(e)
    }

    #[test]
    fn istios_examples_filter() {
        assert!(check("response.code >= 400", &entry(503, "/")));
        assert!(!check("response.code >= 400", &entry(200, "/")));
        assert!(check(
            "response.code >= 500 || request.url_path.startsWith('/api')",
            &entry(200, "/api/v1?x=1")
        ));
        assert!(!check(
            "!(request.path == '/healthz')",
            &entry(200, "/healthz")
        ));
        assert!(check(
            "request.method == \"GET\" && response.code == 200u",
            &entry(200, "/")
        ));
        // A missing header compared by order is an error: not logged.
        assert!(!check("request.headers['x-a'] > 'b'", &entry(200, "/")));
        assert!(!check("request.headers['x-a'] != 'b'", &entry(200, "/")));
        let deep = format!("{}response.code == 200", "!".repeat(10_000));
        assert!(parse(&deep, &mut Default::default()).is_err());
    }

    #[test]
    fn unsupported_expressions_are_refused() {
        for bad in [
            "response.flags > 1",
            "response.size > 1",
            "request.code",
            "a ==",
            "size(request.path) > 1",
        ] {
            assert!(parse(bad, &mut Default::default()).is_err(), "{bad}");
        }
    }
}
