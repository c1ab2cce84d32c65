//! When a failed delivery is tried again.
//!
//! After attempt N fails, the next waits `delays[N-1]` (±10% jitter, so receivers recovering from
//! an outage are not hit by every sender in the same second); after the last delay's attempt the
//! push is given up. A `Retry-After` on the failed answer replaces the wait when it is longer,
//! bounded by [`MAX_RETRY_AFTER`] so a receiver cannot park a delivery for ever.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rand::Rng;

/// The longest wait a `Retry-After` can ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The Standard Webhooks schedule, in seconds: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
const STANDARD_S: [u64; 9] = [
    5,
    5 * 60,
    30 * 60,
    2 * 3600,
    5 * 3600,
    10 * 3600,
    14 * 3600,
    20 * 3600,
    24 * 3600,
];

/// How far either way a wait is jittered.
const JITTER: f64 = 0.10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("invalid push retry schedule {text:?}: {why}; expected comma-separated seconds such as \"5,300,1800\"")]
    Invalid { text: String, why: String },
}

/// The waits between attempts: `delays.len() + 1` attempts in all.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    delays: Vec<Duration>,
}

impl Schedule {
    /// The Standard Webhooks schedule.
    pub fn standard() -> Self {
        Schedule {
            delays: STANDARD_S.iter().map(|s| Duration::from_secs(*s)).collect(),
        }
    }

    /// Explicit waits; `[]` means a single attempt.
    pub fn new(delays: Vec<Duration>) -> Self {
        Schedule { delays }
    }

    /// Parses seconds separated by commas, e.g. `"1,2,3"` or `"0.5, 1"`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let invalid = |why: String| Error::Invalid {
            text: text.to_owned(),
            why,
        };
        if text.trim().is_empty() {
            return Err(invalid("it is empty".into()));
        }
        let delays = text
            .split(',')
            .map(|part| {
                let part = part.trim();
                part.parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .and_then(|s| Duration::try_from_secs_f64(s).ok())
                    .ok_or_else(|| invalid(format!("{part:?} is not a number of seconds")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Schedule { delays })
    }

    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// How many attempts a delivery gets before it is given up.
    pub fn max_attempts(&self) -> u32 {
        u32::try_from(self.delays.len()).map_or(u32::MAX, |n| n.saturating_add(1))
    }

    /// The wait after attempt `attempt` (counted from 1) failed, without jitter; `None` once the
    /// schedule is exhausted.
    pub fn base_delay(&self, attempt: u32) -> Option<Duration> {
        let i = usize::try_from(attempt.checked_sub(1)?).ok()?;
        self.delays.get(i).copied()
    }

    /// The wait after attempt `attempt` failed: jittered, and replaced by the answer's
    /// `Retry-After` when that is longer. `None`: give up.
    pub fn next_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Option<Duration> {
        let base = self.base_delay(attempt)?;
        let jittered = base.mul_f64(rand::thread_rng().gen_range(1.0 - JITTER..=1.0 + JITTER));
        Some(match retry_after {
            Some(asked) => jittered.max(asked.min(MAX_RETRY_AFTER)),
            None => jittered,
        })
    }
}

impl Default for Schedule {
    fn default() -> Self {
        Self::standard()
    }
}

impl FromStr for Schedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Self::parse(s)
    }
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({self})")
    }
}

/// The form [`Schedule::parse`] reads.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.delays.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", d.as_secs_f64())?;
        }
        Ok(())
    }
}

/// A `Retry-After` value, delay-seconds or an HTTP date, as a wait from `now`. A date in the past
/// is no wait; anything unreadable is ignored.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_standard_schedule_gives_ten_attempts() {
        let s = Schedule::default();
        assert_eq!(s.max_attempts(), 10);
        assert_eq!(s.base_delay(0), None);
        assert_eq!(s.base_delay(1), Some(secs(5)));
        assert_eq!(s.base_delay(2), Some(secs(300)));
        assert_eq!(s.base_delay(9), Some(secs(24 * 3600)));
        assert_eq!(s.base_delay(10), None, "given up after the last");
        assert_eq!(
            s.next_delay(10, Some(secs(1))),
            None,
            "Retry-After cannot revive it"
        );
        assert_eq!(
            s.to_string(),
            "5,300,1800,7200,18000,36000,50400,72000,86400"
        );
    }

    #[test]
    fn waits_are_jittered_within_ten_percent() {
        let s = Schedule::standard();
        for _ in 0..200 {
            let d = s.next_delay(2, None).expect("a retry");
            assert!(d >= secs(270) && d <= secs(330), "{d:?}");
        }
    }

    #[test]
    fn retry_after_wins_only_when_longer_and_is_bounded() {
        let s = Schedule::parse("10").expect("parses");
        let short = s.next_delay(1, Some(secs(1))).expect("a retry");
        assert!(short >= secs(9) && short <= secs(11), "{short:?}");
        assert_eq!(s.next_delay(1, Some(secs(600))), Some(secs(600)));
        assert_eq!(
            s.next_delay(1, Some(secs(7 * 24 * 3600))),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn parses_seconds_and_says_what_is_wrong() {
        let s = Schedule::parse(" 1, 2.5 ,0").expect("parses");
        assert_eq!(s.delays(), &[secs(1), Duration::from_millis(2500), secs(0)]);
        assert_eq!(s.max_attempts(), 4);
        assert_eq!(
            "1,1,1".parse::<Schedule>().expect("parses").max_attempts(),
            4
        );
        for bad in ["", " ", "1,,2", "1,x", "-1", "NaN", "inf", "1e400"] {
            let err = Schedule::parse(bad).expect_err(bad).to_string();
            assert!(err.contains("invalid push retry schedule"), "{err}");
            assert!(err.contains("expected comma-separated seconds"), "{err}");
        }
        assert!(Schedule::parse("1,x")
            .expect_err("x")
            .to_string()
            .contains("\"x\" is not a number of seconds"));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(parse_retry_after("120", now), Some(secs(120)));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:37 GMT", now),
            Some(secs(60))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}
