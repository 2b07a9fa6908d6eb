//! Envoy's `access_log` entries (on a connection manager, a TCP proxy or a
//! listener) compiled into loggers: where lines go (`file` — with
//! `/dev/stdout` as istiod writes it — `stdout`, `stderr`), their format,
//! and the filter that decides which requests get one.

use std::sync::Arc;

use envoy_types::pb::envoy::config::accesslog::v3::{
    access_log, access_log_filter::FilterSpecifier, comparison_filter, AccessLog, AccessLogFilter,
    ComparisonFilter,
};
use envoy_types::pb::envoy::config::core::v3::{
    data_source, substitution_format_string, SubstitutionFormatString,
};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::{
    file_access_log, FileAccessLog,
};
use envoy_types::pb::envoy::extensions::access_loggers::filters::cel::v3::ExpressionFilter;
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    stderr_access_log, stdout_access_log, StderrAccessLog, StdoutAccessLog,
};
use envoy_types::pb::google::protobuf::{value::Kind, Struct};

use super::format::{parse_text, Format, JsonValue, Wanted};
use super::sink::Sink;
use super::Entry;
use crate::compile::unpack;
use crate::error::Flags;

/// The loggers of one chain (or listener), and the headers they read.
#[derive(Debug, Default)]
pub struct Logs {
    pub(crate) wanted: Wanted,
    loggers: Vec<Logger>,
}

#[derive(Debug)]
struct Logger {
    sink: Sink,
    format: Format,
    filter: Option<Filter>,
}

#[derive(Debug)]
enum Filter {
    Status(comparison_filter::Op, u32),
    Duration(comparison_filter::Op, u32),
    Flags(Flags),
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Cel(super::cel::Expr),
    Always,
}

/// Envoy's text format when a logger names none.
const ENVOY_DEFAULT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \"%UPSTREAM_HOST%\"\n";

/// None when there is nothing to log (no access log configured). A
/// logger Weft cannot run (an operator or filter it does not know, a
/// file it cannot open) is left out with a warning rather than refusing
/// the whole listener: an access-log typo must not freeze routing.
pub(crate) fn compile(logs: &[AccessLog]) -> Result<Option<Arc<Logs>>, String> {
    if logs.is_empty() {
        return Ok(None);
    }
    let mut out = Logs::default();
    for log in logs {
        let mut wanted = out.wanted.clone();
        match logger(log, &mut wanted) {
            Ok(l) => {
                out.wanted = wanted;
                out.loggers.push(l);
            }
            Err(e) => tracing::warn!(logger = %log.name, error = %e, "access log left out"),
        }
    }
    Ok((!out.loggers.is_empty()).then(|| Arc::new(out)))
}

fn logger(log: &AccessLog, wanted: &mut Wanted) -> Result<Logger, String> {
    let Some(access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
        return Err("needs a typed_config".into());
    };
    let (sink, format) = match any.type_url.rsplit('.').next() {
        Some("FileAccessLog") => {
            let f: FileAccessLog = unpack(any)?;
            let format = match f.access_log_format {
                None => None,
                Some(file_access_log::AccessLogFormat::LogFormat(s)) => Some(s),
                Some(_) => {
                    return Err("only log_format is supported (not the deprecated formats)".into())
                }
            };
            (Sink::path(&f.path)?, format)
        }
        Some("StdoutAccessLog") => {
            let f: StdoutAccessLog = unpack(any)?;
            let format = f
                .access_log_format
                .map(|stdout_access_log::AccessLogFormat::LogFormat(s)| s);
            (Sink::path("/dev/stdout")?, format)
        }
        Some("StderrAccessLog") => {
            let f: StderrAccessLog = unpack(any)?;
            let format = f
                .access_log_format
                .map(|stderr_access_log::AccessLogFormat::LogFormat(s)| s);
            (Sink::path("/dev/stderr")?, format)
        }
        _ => return Err(format!("logger {} is not supported", any.type_url)),
    };
    Ok(Logger {
        sink,
        format: substitution(format.as_ref(), wanted)?,
        filter: log.filter.as_ref().map(|f| filter(f, wanted)).transpose()?,
    })
}

fn substitution(
    f: Option<&SubstitutionFormatString>,
    wanted: &mut Wanted,
) -> Result<Format, String> {
    use substitution_format_string::Format as F;
    let Some(f) = f else {
        return Ok(Format::Text(parse_text(ENVOY_DEFAULT, wanted)?));
    };
    if f.omit_empty_values {
        return Err("omit_empty_values is not supported".into());
    }
    match &f.format {
        #[allow(deprecated)] // still what older control planes send
        Some(F::TextFormat(t)) => Ok(Format::Text(parse_text(t, wanted)?)),
        Some(F::TextFormatSource(src)) => match &src.specifier {
            Some(data_source::Specifier::InlineString(t)) => {
                Ok(Format::Text(parse_text(t, wanted)?))
            }
            _ => Err("text_format_source must be an inline_string".into()),
        },
        Some(F::JsonFormat(s)) => Ok(Format::Json(json(s, wanted)?)),
        None => Ok(Format::Text(parse_text(ENVOY_DEFAULT, wanted)?)),
    }
}

/// Fields in key order (the message's map has none of its own), so lines
/// are the same on every proxy and every push.
fn json(s: &Struct, wanted: &mut Wanted) -> Result<Vec<(String, JsonValue)>, String> {
    let mut fields = Vec::new();
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    for (key, value) in keys.into_iter().map(|k| (k, &s.fields[k])) {
        let v = match &value.kind {
            Some(Kind::StringValue(t)) => JsonValue::Pieces(parse_text(t, wanted)?),
            Some(Kind::StructValue(inner)) => JsonValue::Object(json(inner, wanted)?),
            Some(Kind::NumberValue(n)) => JsonValue::Literal(n.to_string()),
            Some(Kind::BoolValue(b)) => JsonValue::Literal(b.to_string()),
            Some(Kind::NullValue(_)) | None => JsonValue::Literal("null".into()),
            Some(Kind::ListValue(_)) => {
                return Err(format!("json_format {key:?}: lists are not supported"))
            }
        };
        fields.push((key.clone(), v));
    }
    Ok(fields)
}

fn filter(f: &AccessLogFilter, wanted: &mut Wanted) -> Result<Filter, String> {
    let comparison =
        |c: &Option<ComparisonFilter>| -> Result<(comparison_filter::Op, u32), String> {
            let c = c.as_ref().ok_or("a comparison is required")?;
            let op = comparison_filter::Op::try_from(c.op).map_err(|_| "unknown comparison op")?;
            Ok((op, c.value.as_ref().map_or(0, |v| v.default_value)))
        };
    Ok(match &f.filter_specifier {
        Some(FilterSpecifier::StatusCodeFilter(s)) => {
            let (op, v) = comparison(&s.comparison)?;
            Filter::Status(op, v)
        }
        Some(FilterSpecifier::DurationFilter(d)) => {
            let (op, v) = comparison(&d.comparison)?;
            Filter::Duration(op, v)
        }
        Some(FilterSpecifier::ResponseFlagFilter(r)) => {
            // A flag Weft never sets (LR, RL, …) matches nothing.
            let mut flags = Flags::default();
            for f in r.flags.iter().filter_map(|n| Flags::named(n)) {
                flags.insert(f);
            }
            if flags == Flags::default() && !r.flags.is_empty() {
                Filter::Or(Vec::new())
            } else {
                Filter::Flags(flags)
            }
        }
        Some(FilterSpecifier::NotHealthCheckFilter(_)) => Filter::Always,
        Some(FilterSpecifier::AndFilter(a)) => Filter::And(
            a.filters
                .iter()
                .map(|f| filter(f, wanted))
                .collect::<Result<_, _>>()?,
        ),
        Some(FilterSpecifier::OrFilter(o)) => Filter::Or(
            o.filters
                .iter()
                .map(|f| filter(f, wanted))
                .collect::<Result<_, _>>()?,
        ),
        Some(FilterSpecifier::ExtensionFilter(x)) => {
            use envoy_types::pb::envoy::config::accesslog::v3::extension_filter::ConfigType;
            let Some(ConfigType::TypedConfig(any)) = &x.config_type else {
                return Err("extension filter needs a typed_config".into());
            };
            if !any.type_url.ends_with("cel.v3.ExpressionFilter") {
                return Err(format!("filter {} is not supported", any.type_url));
            }
            let cel: ExpressionFilter = unpack(any)?;
            Filter::Cel(super::cel::parse(&cel.expression, wanted)?)
        }
        _ => return Err("this access log filter is not supported by this version of Weft".into()),
    })
}

fn compare(op: comparison_filter::Op, have: u64, want: u32) -> bool {
    use comparison_filter::Op;
    match op {
        Op::Eq => have == u64::from(want),
        Op::Ge => have >= u64::from(want),
        Op::Le => have <= u64::from(want),
        Op::Ne => have != u64::from(want),
    }
}

impl Filter {
    fn passes(&self, e: &Entry) -> bool {
        match self {
            Filter::Status(op, v) => compare(*op, u64::from(e.status), *v),
            Filter::Duration(op, v) => compare(*op, e.duration.as_millis() as u64, *v),
            Filter::Flags(f) if *f == Flags::default() => e.flags != Flags::default(),
            Filter::Flags(f) => e.flags.intersects(*f),
            Filter::And(all) => all.iter().all(|f| f.passes(e)),
            Filter::Or(any) => any.iter().any(|f| f.passes(e)),
            Filter::Cel(x) => super::cel::matches(x, e),
            Filter::Always => true,
        }
    }
}

impl Logs {
    /// Writes the entry's line to every logger whose filter passes it.
    pub(crate) fn write(&self, e: &Entry) {
        for l in &self.loggers {
            if l.filter.as_ref().is_none_or(|f| f.passes(e)) {
                l.sink.write(|buf| l.format.render(buf, e));
            }
        }
    }
}
