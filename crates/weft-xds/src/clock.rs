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

/// A UTC instant broken into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanos: u32,
    /// Seconds since the Unix epoch.
    pub epoch: u64,
}

impl Civil {
    pub fn of(at: SystemTime) -> Civil {
        let d = at
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
        Civil {
            year: yoe + era * 400 + i64::from(month <= 2),
            month: month as u32,
            day: day as u32,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            nanos: d.subsec_nanos(),
            epoch: d.as_secs(),
        }
    }
}

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = Civil::of(self.at);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            c.year, c.month, c.day, c.hour, c.minute, c.second
        )?;
        if self.millis {
            write!(f, ".{:03}", c.nanos / 1_000_000)?;
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
