//! The syntax of the CEL that access-log filters are written in (Istio's
//! Telemetry `accessLogging.filter.expression`, which istiod hands to
//! Envoy's CEL filter): `&&`, `||`, `!`, parentheses, comparisons, the
//! string methods `startsWith`/`endsWith`/`contains`, literals, and Envoy's
//! request/response/connection attributes.
//!
//! One parser for both ends: validation tells text that is not CEL at all
//! (an error, as istiod's `cel.Parse` refuses it) from CEL that Weft's
//! proxies do not evaluate (a warning: such a logger is left out), and the
//! proxy compiles what parses into its evaluator.

/// An expression; `H` is how a request header is named (by name here,
/// by capture slot in the proxy).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr<H = String> {
    Or(Box<Expr<H>>, Box<Expr<H>>),
    And(Box<Expr<H>>, Box<Expr<H>>),
    Not(Box<Expr<H>>),
    Cmp(Cmp, Box<Expr<H>>, Box<Expr<H>>),
    Method(StrMethod, Box<Expr<H>>, Box<Expr<H>>),
    Attr(Attr<H>),
    Lit(Val),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrMethod {
    StartsWith,
    EndsWith,
    Contains,
}

/// Envoy's attributes that Weft's access log knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr<H = String> {
    ResponseCode,
    ResponseCodeDetails,
    Method,
    Path,
    UrlPath,
    Host,
    Protocol,
    RequestId,
    /// A request header (lower-case name).
    RequestHeader(H),
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
pub enum Val {
    Int(i64),
    Str(String),
    Bool(bool),
    Null,
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CelError {
    /// Not CEL: refused at apply, as istiod refuses it.
    Syntax(String),
    /// CEL, but outside what Weft evaluates.
    Unsupported(String),
}

impl std::fmt::Display for CelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CelError::Syntax(m) => write!(f, "not a CEL expression: {m}"),
            CelError::Unsupported(m) => write!(f, "not supported by Weft's proxies: {m}"),
        }
    }
}

pub fn parse(text: &str) -> Result<Expr, CelError> {
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens: &tokens,
        at: 0,
        depth: 0,
        unsupported: None,
    };
    let e = p.expr()?;
    if let Some(t) = p.tokens.get(p.at) {
        return Err(CelError::Syntax(format!(
            "unexpected {t:?} at token {}",
            p.at + 1
        )));
    }
    // All of it is CEL; now, is all of it Weft's?
    match p.unsupported {
        Some(what) => Err(CelError::Unsupported(what)),
        None => Ok(e),
    }
}

impl<H> Expr<H> {
    /// The same expression with its headers named another way (the
    /// proxy's capture slots); the first refusal wins.
    pub fn map_headers<T, E>(self, f: &mut dyn FnMut(H) -> Result<T, E>) -> Result<Expr<T>, E> {
        type Pair<T> = (Box<Expr<T>>, Box<Expr<T>>);
        fn both<H, T, E>(
            a: Expr<H>,
            b: Expr<H>,
            f: &mut dyn FnMut(H) -> Result<T, E>,
        ) -> Result<Pair<T>, E> {
            Ok((Box::new(a.map_headers(f)?), Box::new(b.map_headers(f)?)))
        }
        Ok(match self {
            Expr::Or(a, b) => {
                let (a, b) = both(*a, *b, f)?;
                Expr::Or(a, b)
            }
            Expr::And(a, b) => {
                let (a, b) = both(*a, *b, f)?;
                Expr::And(a, b)
            }
            Expr::Cmp(c, a, b) => {
                let (a, b) = both(*a, *b, f)?;
                Expr::Cmp(c, a, b)
            }
            Expr::Method(m, a, b) => {
                let (a, b) = both(*a, *b, f)?;
                Expr::Method(m, a, b)
            }
            Expr::Not(a) => Expr::Not(Box::new(a.map_headers(f)?)),
            Expr::Attr(a) => Expr::Attr(a.map_header(f)?),
            Expr::Lit(v) => Expr::Lit(v),
        })
    }
}

impl<H> Attr<H> {
    fn map_header<T, E>(self, f: &mut dyn FnMut(H) -> Result<T, E>) -> Result<Attr<T>, E> {
        use Attr::*;
        Ok(match self {
            RequestHeader(h) => RequestHeader(f(h)?),
            ResponseCode => ResponseCode,
            ResponseCodeDetails => ResponseCodeDetails,
            Method => Method,
            Path => Path,
            UrlPath => UrlPath,
            Host => Host,
            Protocol => Protocol,
            RequestId => RequestId,
            Duration => Duration,
            SourceAddress => SourceAddress,
            SourcePort => SourcePort,
            DestinationAddress => DestinationAddress,
            DestinationPort => DestinationPort,
            UpstreamAddress => UpstreamAddress,
            Mtls => Mtls,
            RequestedServerName => RequestedServerName,
            ClusterName => ClusterName,
            RouteName => RouteName,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Int(i64),
    Float,
    Op(&'static str),
}

/// CEL's operators and punctuation, longest first. Weft's subset uses
/// the first fifteen; the rest are CEL Weft does not evaluate.
const OPS: [&str; 25] = [
    "&&", "||", "==", "!=", "<=", ">=", "<", ">", "!", "(", ")", "[", "]", ".", ",", "+", "-", "*",
    "/", "%", "?", ":", "{", "}", "in",
];

fn lex(text: &str) -> Result<Vec<Tok>, CelError> {
    let syntax = |m: String| CelError::Syntax(format!("{text:?}: {m}"));
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
                .ok_or_else(|| syntax("unterminated string".into()))?;
            out.push(Tok::Str(text[i + 1..i + 1 + end].to_string()));
            i += end + 2;
        } else if c.is_ascii_digit() {
            let end = text[i..]
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .map_or(text.len(), |e| i + e);
            let literal = &text[i..end];
            if literal.contains('.') {
                literal
                    .parse::<f64>()
                    .map_err(|_| syntax(format!("{literal:?} is not a number")))?;
                out.push(Tok::Float);
            } else {
                let n = literal
                    .parse()
                    .map_err(|_| syntax(format!("{literal:?} is out of range")))?;
                out.push(Tok::Int(n));
            }
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
            let word = &text[i..end];
            out.push(if word == "in" {
                Tok::Op("in")
            } else {
                Tok::Ident(word.to_string())
            });
            i = end;
        } else if let Some(op) = OPS.iter().find(|op| text[i..].starts_with(**op)) {
            out.push(Tok::Op(op));
            i += op.len();
        } else {
            return Err(syntax(format!("unexpected {c:?}")));
        }
    }
    Ok(out)
}

/// Nesting deeper than this is refused (a stack overflow otherwise).
const MAX_DEPTH: usize = 64;

/// CEL's grammar, read whole: what Weft does not evaluate is noted (the
/// first such thing) and parsed on, so that text which is not CEL at all
/// is told apart from CEL outside Weft's subset.
struct Parser<'a> {
    tokens: &'a [Tok],
    at: usize,
    depth: usize,
    unsupported: Option<String>,
}

type Parsed = Result<Expr, CelError>;

impl Parser<'_> {
    fn eat(&mut self, op: &str) -> bool {
        let hit = matches!(self.tokens.get(self.at), Some(Tok::Op(o)) if *o == op);
        self.at += usize::from(hit);
        hit
    }

    fn expect(&mut self, op: &str) -> Result<(), CelError> {
        match self.eat(op) {
            true => Ok(()),
            false => Err(match self.tokens.get(self.at) {
                Some(t) => CelError::Syntax(format!(
                    "expected {op:?}, found {t:?} at token {}",
                    self.at + 1
                )),
                None => CelError::Syntax(format!("expected {op:?} at the end")),
            }),
        }
    }

    /// Notes a construct Weft does not evaluate; parsing goes on.
    fn skip(&mut self, what: impl Into<String>) -> Expr {
        self.unsupported.get_or_insert_with(|| what.into());
        Expr::Lit(Val::Null)
    }

    /// `c ? a : b` around the logical operators.
    fn expr(&mut self) -> Parsed {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CelError::Unsupported(format!(
                "nesting deeper than {MAX_DEPTH}"
            )));
        }
        let mut e = self.or();
        if e.is_ok() && self.eat("?") {
            let _ = self.expr()?;
            self.expect(":")?;
            let _ = self.expr()?;
            e = Ok(self.skip("the conditional operator ?:"));
        }
        self.depth -= 1;
        e
    }

    fn or(&mut self) -> Parsed {
        let mut e = self.and()?;
        while self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Parsed {
        let mut e = self.relation()?;
        while self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.relation()?));
        }
        Ok(e)
    }

    fn relation(&mut self) -> Parsed {
        let left = self.arithmetic()?;
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
        if let Some((_, c)) = cmp {
            return Ok(Expr::Cmp(c, Box::new(left), Box::new(self.arithmetic()?)));
        }
        if self.eat("in") {
            self.arithmetic()?;
            return Ok(self.skip("the operator in"));
        }
        Ok(left)
    }

    fn arithmetic(&mut self) -> Parsed {
        let mut e = self.unary()?;
        while let Some(op) = ["+", "-", "*", "/", "%"]
            .into_iter()
            .find(|op| self.eat(op))
        {
            self.unary()?;
            e = self.skip(format!("the operator {op:?}"));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Parsed {
        if self.eat("!") {
            let inner = self.nested(Self::unary)?;
            return Ok(Expr::Not(Box::new(inner)));
        }
        if self.eat("-") {
            self.nested(Self::unary)?;
            return Ok(self.skip("negation"));
        }
        self.postfix()
    }

    /// A recursive step, counted against `MAX_DEPTH`.
    fn nested(&mut self, step: fn(&mut Self) -> Parsed) -> Parsed {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(CelError::Unsupported(format!(
                "nesting deeper than {MAX_DEPTH}"
            )));
        }
        let e = step(self);
        self.depth -= 1;
        e
    }

    /// A primary, then member calls (`.startsWith(…)`), fields and
    /// indexes.
    fn postfix(&mut self) -> Parsed {
        let mut e = self.primary()?;
        loop {
            if self.eat("[") {
                self.expr()?;
                self.expect("]")?;
                e = self.skip("indexing");
            } else if self.eat(".") {
                let Some(Tok::Ident(name)) = self.tokens.get(self.at).cloned() else {
                    return Err(self.syntax_here("a field or method name"));
                };
                self.at += 1;
                if !self.eat("(") {
                    e = self.skip(format!("the field .{name}"));
                    continue;
                }
                let args = self.arguments(")")?;
                let method = match name.as_str() {
                    "startsWith" => Some(StrMethod::StartsWith),
                    "endsWith" => Some(StrMethod::EndsWith),
                    "contains" => Some(StrMethod::Contains),
                    _ => None,
                };
                e = match (method, <[Expr; 1]>::try_from(args)) {
                    (Some(m), Ok([arg])) => Expr::Method(m, Box::new(e), Box::new(arg)),
                    _ => self.skip(format!("the method {name}()")),
                };
            } else {
                return Ok(e);
            }
        }
    }

    /// Comma-separated expressions up to `close`.
    fn arguments(&mut self, close: &str) -> Result<Vec<Expr>, CelError> {
        let mut out = Vec::new();
        if self.eat(close) {
            return Ok(out);
        }
        loop {
            out.push(self.expr()?);
            if self.eat(close) {
                return Ok(out);
            }
            self.expect(",")?;
        }
    }

    fn syntax_here(&self, wanted: &str) -> CelError {
        match self.tokens.get(self.at) {
            Some(t) => CelError::Syntax(format!(
                "expected {wanted}, found {t:?} at token {}",
                self.at + 1
            )),
            None => CelError::Syntax(format!("expected {wanted} at the end")),
        }
    }

    fn primary(&mut self) -> Parsed {
        if self.eat("(") {
            let e = self.expr()?;
            self.expect(")")?;
            return Ok(e);
        }
        if self.eat("[") {
            self.arguments("]")?;
            return Ok(self.skip("list literals"));
        }
        if self.eat("{") {
            if !self.eat("}") {
                loop {
                    self.expr()?;
                    self.expect(":")?;
                    self.expr()?;
                    if self.eat("}") {
                        break;
                    }
                    self.expect(",")?;
                }
            }
            return Ok(self.skip("map literals"));
        }
        let Some(tok) = self.tokens.get(self.at).cloned() else {
            return Err(CelError::Syntax("the expression ends too soon".into()));
        };
        match tok {
            Tok::Int(n) => {
                self.at += 1;
                Ok(Expr::Lit(Val::Int(n)))
            }
            Tok::Float => {
                self.at += 1;
                Ok(self.skip("double literals"))
            }
            Tok::Str(s) => {
                self.at += 1;
                Ok(Expr::Lit(Val::Str(s)))
            }
            Tok::Ident(id) => {
                self.at += 1;
                match id.as_str() {
                    "true" | "false" => Ok(Expr::Lit(Val::Bool(id == "true"))),
                    "null" => Ok(Expr::Lit(Val::Null)),
                    _ if self.eat("(") => {
                        self.arguments(")")?;
                        Ok(self.skip(format!("the function {id}()")))
                    }
                    _ => self.attribute(id),
                }
            }
            Tok::Op(_) => Err(self.syntax_here("a value")),
        }
    }

    /// `root.field` (and `request.headers['name']`) as Envoy's attributes.
    fn attribute(&mut self, root: String) -> Parsed {
        let next_is_field = matches!(self.tokens.get(self.at), Some(Tok::Op(".")))
            && matches!(self.tokens.get(self.at + 1), Some(Tok::Ident(_)))
            && !matches!(self.tokens.get(self.at + 2), Some(Tok::Op("(")));
        if !next_is_field {
            return Ok(self.skip(format!("the variable {root}")));
        }
        let Some(Tok::Ident(field)) = self.tokens.get(self.at + 1).cloned() else {
            unreachable!("checked above")
        };
        self.at += 2;
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
            ("request", "useragent") => Attr::RequestHeader("user-agent".into()),
            ("request", "referer") => Attr::RequestHeader("referer".into()),
            ("request", "headers") => return self.header(),
            ("source", "address") => Attr::SourceAddress,
            ("source", "port") => Attr::SourcePort,
            ("destination", "address") => Attr::DestinationAddress,
            ("destination", "port") => Attr::DestinationPort,
            ("upstream", "address") => Attr::UpstreamAddress,
            ("connection", "mtls") => Attr::Mtls,
            ("connection", "requested_server_name") => Attr::RequestedServerName,
            ("xds", "cluster_name") => Attr::ClusterName,
            ("xds", "route_name") => Attr::RouteName,
            _ => return Ok(self.skip(format!("the attribute {root}.{field}"))),
        };
        Ok(Expr::Attr(attr))
    }

    /// `request.headers['name']`; other uses of the map are not Weft's.
    fn header(&mut self) -> Parsed {
        let quoted = matches!(self.tokens.get(self.at), Some(Tok::Op("[")))
            && matches!(self.tokens.get(self.at + 2), Some(Tok::Op("]")));
        match self.tokens.get(self.at + 1).cloned() {
            Some(Tok::Str(name)) if quoted => {
                self.at += 3;
                Ok(Expr::Attr(Attr::RequestHeader(name.to_ascii_lowercase())))
            }
            _ => Ok(self.skip("request.headers other than request.headers['name']")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(text: &str) -> &'static str {
        match parse(text) {
            Ok(_) => "ok",
            Err(CelError::Syntax(_)) => "syntax",
            Err(CelError::Unsupported(_)) => "unsupported",
        }
    }

    #[test]
    fn istios_validation_cases_and_weft_subset() {
        // istiod's own cases: the first three are CEL, the last is not.
        assert_eq!(kind("response.code >= 400"), "ok");
        assert_eq!(
            kind("connection.mtls && request.url_path.contains('v1beta3')"),
            "ok"
        );
        assert_eq!(kind("response.code"), "ok");
        assert_eq!(kind(")++++"), "syntax");
        for not_cel in ["a ==", "request.path == 'x", "(response.code", "a # b", ""] {
            assert_eq!(kind(not_cel), "syntax", "{not_cel}");
        }
        for cel_weft_skips in [
            "response.flags > 1",
            "size(request.path) > 1",
            "response.code + 1 > 2",
            "request.method in ['GET']",
            "response.code > 1.5",
            "request.path.matches('x')",
            "x > 1",
        ] {
            assert_eq!(kind(cel_weft_skips), "unsupported", "{cel_weft_skips}");
        }
        let deep = format!("{}response.code == 200", "!".repeat(10_000));
        assert_eq!(kind(&deep), "unsupported");
    }

    #[test]
    fn headers_are_named_in_lower_case_and_can_be_renamed() {
        let e = parse("request.headers['X-A'] == 'b' || request.useragent == 'c'").unwrap();
        let mut seen = Vec::new();
        let slots = e
            .map_headers(&mut |h: String| {
                seen.push(h);
                Ok::<usize, ()>(seen.len() - 1)
            })
            .unwrap();
        assert_eq!(seen, ["x-a", "user-agent"]);
        let Expr::Or(a, _) = slots else { panic!() };
        assert!(
            matches!(*a, Expr::Cmp(Cmp::Eq, ref h, _) if **h == Expr::Attr(Attr::RequestHeader(0)))
        );
    }
}
