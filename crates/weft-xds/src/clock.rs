//! RFC 3339 timestamps in UTC without a date crate (days-to-civil
//! conversion from Howard Hinnant's algorithm), for both ends: the proxy's
//! access log (milliseconds) and the control plane's object metadata
//! (seconds, as Kubernetes writes `creationTimestamp`).

use std::time::SystemTime;

pub struct Rfc3339 {
    at: SystemTime,
    millis: bool,
}

impl Rfc3339 {
    /// `2025-11-24T16:00:00.123Z`
    pub fn millis(at: SystemTime) -> Rfc3339 {
        Rfc3339 { at, millis: true }
    }

    /// `2025-11-24T16:00:00Z`
    pub fn seconds(at: SystemTime) -> Rfc3339 {
        Rfc3339 { at, millis: false }
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self
            .at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let secs = d.as_secs() as i64;
        let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
        )?;
        if self.millis {
            write!(f, ".{:03}", d.subsec_millis())?;
        }
        f.write_str("Z")
    }
}

#[cfg(test)]
mod tests {
    use super::Rfc3339;

    #[test]
    fn timestamps() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_000_000_123);
        assert_eq!(Rfc3339::millis(t).to_string(), "2025-11-24T16:00:00.123Z");
        assert_eq!(Rfc3339::seconds(t).to_string(), "2025-11-24T16:00:00Z");
    }
}
