//! Envoy's substitution format strings (`%START_TIME%`, `%REQ(X?Y):N%`, …):
//! one grammar for the proxy, which compiles them into its log lines, and
//! for validation, which names a format Weft cannot write at apply (the
//! mesh config's `accessLogFormat`, a provider's `logFormat`) instead of
//! leaving it to each proxy to drop that logger.

/// A piece of a format string.
#[derive(Debug, Clone, PartialEq)]
pub enum Token<'a> {
    /// Text written as it is (`%%` already made `%`).
    Lit(String),
    Command(Command<'a>),
}

/// `%NAME%`, `%NAME(ARG)%` or `%NAME(ARG):MAX%`.
#[derive(Debug, Clone, PartialEq)]
pub struct Command<'a> {
    pub name: &'a str,
    pub arg: Option<&'a str>,
    /// Longest value written (Envoy's `:N`).
    pub max: Option<usize>,
    /// The command as written, between its `%`s.
    pub text: &'a str,
}

/// The commands without an argument that Weft writes.
pub const SIMPLE: &[&str] = &[
    "PROTOCOL",
    "RESPONSE_CODE",
    "RESPONSE_FLAGS",
    "RESPONSE_CODE_DETAILS",
    "CONNECTION_TERMINATION_DETAILS",
    "UPSTREAM_TRANSPORT_FAILURE_REASON",
    "BYTES_RECEIVED",
    "BYTES_SENT",
    "DURATION",
    "UPSTREAM_HOST",
    "UPSTREAM_CLUSTER",
    "UPSTREAM_CLUSTER_RAW",
    "UPSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS",
    "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT",
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT",
    "REQUESTED_SERVER_NAME",
    "ROUTE_NAME",
    "DOWNSTREAM_PEER_URI_SAN",
    "HOSTNAME",
    "START_TIME",
];

/// The pseudo-headers a request's commands read (without the `:`).
pub const PSEUDO: &[&str] = &["method", "path", "authority"];

/// The one `DYNAMIC_METADATA` Weft writes: RBAC's AUDIT mark.
pub const ACCESS_LOG_HINT: &str = "envoy.common:access_log_hint";

/// The pieces of `text`, or why it is not a format string.
pub fn tokens(text: &str) -> Result<Vec<Token<'_>>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        lit.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('%') {
            lit.push('%');
            rest = after;
            continue;
        }
        let end = command_end(rest).ok_or_else(|| format!("{text:?}: unterminated '%'"))?;
        if !lit.is_empty() {
            out.push(Token::Lit(std::mem::take(&mut lit)));
        }
        out.push(Token::Command(command(&rest[..end])?));
        rest = &rest[end + 1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Token::Lit(lit));
    }
    Ok(out)
}

/// What is wrong with a format string.
#[derive(Debug, PartialEq)]
pub enum Problem {
    /// Not a format string (Envoy refuses it too).
    Syntax(String),
    /// A command Envoy has and Weft does not write: proxies leave the
    /// logger out.
    Unsupported(String),
}

/// Checks that Weft can write every command of `text`, as the proxy will
/// compile it.
pub fn check(text: &str) -> Result<(), Problem> {
    for t in tokens(text).map_err(Problem::Syntax)? {
        let Token::Command(c) = t else { continue };
        match (c.name, c.arg) {
            ("START_TIME", Some(f)) if !f.is_empty() => {
                check_time(f).map_err(Problem::Unsupported)?;
            }
            ("START_TIME", _) => {}
            ("REQ" | "REQ_WITHOUT_QUERY" | "RESP", Some(a)) => {
                for h in a.splitn(2, '?') {
                    let request = c.name != "RESP";
                    match h.strip_prefix(':') {
                        Some(p) if request && PSEUDO.contains(&p.to_ascii_lowercase().as_str()) => {
                        }
                        Some(p) if is_header_name(p) => {
                            return Err(Problem::Unsupported(unsupported(c.text)))
                        }
                        _ if is_header_name(h) => {}
                        _ => {
                            let why = format!("%{}%: {h:?} is not a header name", c.text);
                            return Err(Problem::Syntax(why));
                        }
                    }
                }
            }
            ("DYNAMIC_METADATA", Some(ACCESS_LOG_HINT)) | ("ENVIRONMENT", Some(_)) => {}
            (name, None) if SIMPLE.contains(&name) => {}
            _ => return Err(Problem::Unsupported(unsupported(c.text))),
        }
    }
    Ok(())
}

/// An HTTP field name (RFC 9110 token).
fn is_header_name(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub fn unsupported(cmd: &str) -> String {
    format!("access log command %{cmd}% is not supported by this version of Weft")
}

/// Where a command's closing `%` is: after its `(…)` arguments, which may
/// themselves hold `%` (a START_TIME format).
fn command_end(s: &str) -> Option<usize> {
    let name_end = s.find(['(', '%'])?;
    if s.as_bytes()[name_end] == b'%' {
        return Some(name_end);
    }
    let close = name_end + s[name_end..].find(')')?;
    Some(close + 1 + s[close + 1..].find('%')?)
}

fn command(text: &str) -> Result<Command<'_>, String> {
    let (head, max) = match text.rsplit_once("):") {
        Some((h, n)) => (
            &text[..h.len() + 1],
            Some(
                n.parse::<usize>()
                    .map_err(|_| format!("%{text}%: bad max length {n:?}"))?,
            ),
        ),
        None => (text, None),
    };
    let (name, arg) = match head.split_once('(') {
        Some((n, a)) => (
            n,
            Some(
                a.strip_suffix(')')
                    .ok_or_else(|| format!("%{text}%: unclosed argument"))?,
            ),
        ),
        None => (head, None),
    };
    Ok(Command {
        name,
        arg,
        max,
        text,
    })
}

/// The strftime conversions Weft writes (Envoy's START_TIME accepts these
/// and more; the rest are refused so that a line never silently differs).
pub fn check_time(f: &str) -> Result<(), String> {
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        let spec: String = match chars.next() {
            Some('E') | Some('0'..='9') => {
                let mut s = String::new();
                for c in chars.by_ref() {
                    s.push(c);
                    if c.is_ascii_alphabetic() && c != 'E' {
                        break;
                    }
                }
                s
            }
            Some(c) => c.to_string(),
            None => String::new(),
        };
        let digits = |suffix: char| {
            spec.strip_suffix(suffix)
                .is_some_and(|n| n.parse::<u8>().is_ok_and(|n| n <= 9))
        };
        let ok = matches!(
            spec.as_str(),
            "Y" | "m" | "d" | "H" | "M" | "S" | "s" | "z" | "Z" | "F" | "T" | "%" | "f"
        ) || digits('S')
            || digits('f');
        if !ok {
            return Err(format!(
                "START_TIME format {f:?}: %{spec} is not supported by this version of Weft"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_arguments_and_lengths() {
        let t = tokens("[%START_TIME(%Y %s)%] %REQ(X-A?:PATH):4% 100%% %BYTES_SENT%").unwrap();
        let names: Vec<_> = t
            .iter()
            .map(|t| match t {
                Token::Lit(l) => format!("lit {l:?}"),
                Token::Command(c) => format!("{} {:?} {:?}", c.name, c.arg, c.max),
            })
            .collect();
        assert_eq!(
            names,
            [
                "lit \"[\"",
                "START_TIME Some(\"%Y %s\") None",
                "lit \"] \"",
                "REQ Some(\"X-A?:PATH\") Some(4)",
                "lit \" 100% \"",
                "BYTES_SENT None None",
            ]
        );
    }

    #[test]
    fn what_weft_cannot_write_is_named() {
        assert!(check("%RESPONSE_CODE% %REQ(x-b3-traceid)% %START_TIME(%F %T)%").is_ok());
        let syntax = |t| match check(t) {
            Err(Problem::Syntax(e)) => e,
            other => panic!("{other:?}"),
        };
        let unsupported = |t| match check(t) {
            Err(Problem::Unsupported(e)) => e,
            other => panic!("{other:?}"),
        };
        assert!(syntax("%RESPONSE_CODE").contains("unterminated"));
        assert!(syntax("%REQ(x y)%").contains("not a header name"));
        assert!(syntax("%BYTES_SENT(%").contains("unterminated"));
        assert!(unsupported("%FILTER_STATE(x)%").contains("%FILTER_STATE(x)% is not supported"));
        assert!(unsupported("%UPSTREAM_PEER_SUBJECT%").contains("not supported"));
        assert!(unsupported("%START_TIME(%j)%").contains("%j is not supported"));
        assert!(unsupported("%REQ(:SCHEME)%").contains("not supported"));
        assert!(unsupported("%RESP(:status)%").contains("not supported"));
        assert!(check("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ(:AUTHORITY)%").is_ok());
    }
}
