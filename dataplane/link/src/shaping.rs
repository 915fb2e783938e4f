//! Bandwidth shaping of a job's source sessions: a token bucket shared by all sessions
//! of the job (on every core), whose rate follows an optional time-of-day schedule.
//! The bucket and the schedule are pure (time comes in as arguments); `RateLimiter`
//! adds the lock and the clock.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use xtsync_api::RateWindow;

/// A token bucket: `rate` bytes per second, at most `burst` bytes saved up. A take
/// larger than what is there goes into debt; the caller waits until it is repaid.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_bytes_per_s: u64,
    burst_bytes: u64,
    /// Bytes available (negative: owed).
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate_bytes_per_s: u64, now: Instant) -> TokenBucket {
        let burst_bytes = burst_for(rate_bytes_per_s);
        TokenBucket { rate_bytes_per_s, burst_bytes, tokens: burst_bytes as f64, last: now }
    }

    /// Changes the rate (a schedule window began or ended); what was saved is kept,
    /// within the new burst.
    pub fn set_rate(&mut self, rate_bytes_per_s: u64, now: Instant) {
        if rate_bytes_per_s != self.rate_bytes_per_s {
            self.refill(now);
            self.rate_bytes_per_s = rate_bytes_per_s;
            self.burst_bytes = burst_for(rate_bytes_per_s);
            self.tokens = self.tokens.min(self.burst_bytes as f64);
        }
    }

    /// Takes `bytes`; returns how long the caller must wait before sending them
    /// (zero when they were there). A rate of 0 means unlimited.
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        if self.rate_bytes_per_s == 0 {
            return Duration::ZERO;
        }
        self.refill(now);
        self.tokens -= bytes as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate_bytes_per_s as f64)
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate_bytes_per_s as f64).min(self.burst_bytes as f64);
    }
}

/// A tenth of a second of traffic, at least one large frame: smooth, yet no frame waits
/// for more than the bucket can hold.
fn burst_for(rate_bytes_per_s: u64) -> u64 {
    (rate_bytes_per_s / 10).max(512 << 10)
}

/// The rate at `minute_of_day` (0..1440, the worker's local time): the first window
/// that contains it, else `default` (0: unlimited). A window may wrap midnight.
pub fn rate_at(default: u64, schedule: &[RateWindow], minute_of_day: u32) -> u64 {
    schedule
        .iter()
        .find(|w| {
            let (from, to) = (w.from_minute, w.to_minute);
            if from <= to {
                (from..to).contains(&minute_of_day)
            } else {
                minute_of_day >= from || minute_of_day < to
            }
        })
        .map_or(default, |w| w.bytes_per_s)
}

/// One job's limiter, shared by its sessions on every executor.
pub struct RateLimiter {
    default_bytes_per_s: u64,
    schedule: Vec<RateWindow>,
    bucket: Mutex<TokenBucket>,
}

impl RateLimiter {
    /// `None` when the job has no limit at all.
    pub fn for_job(options: &xtsync_api::JobOptions) -> Option<RateLimiter> {
        if options.rate_limit_bytes_per_s == 0 && options.rate_schedule.is_empty() {
            return None;
        }
        let now = Instant::now();
        let rate = rate_at(options.rate_limit_bytes_per_s, &options.rate_schedule, local_minute_of_day());
        Some(RateLimiter {
            default_bytes_per_s: options.rate_limit_bytes_per_s,
            schedule: options.rate_schedule.clone(),
            bucket: Mutex::new(TokenBucket::new(rate, now)),
        })
    }

    /// How long to wait before sending `bytes` now.
    pub fn delay(&self, bytes: u64) -> Duration {
        let now = Instant::now();
        let rate = if self.schedule.is_empty() {
            self.default_bytes_per_s
        } else {
            rate_at(self.default_bytes_per_s, &self.schedule, local_minute_of_day())
        };
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        bucket.set_rate(rate, now);
        bucket.take(bytes, now)
    }
}

/// Minutes since local midnight (the worker's time zone; UTC if it has none).
fn local_minute_of_day() -> u32 {
    // SAFETY: time(NULL) and localtime_r with valid pointers to locals.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return ((t / 60) % 1440) as u32;
        }
        (tm.tm_hour * 60 + tm.tm_min) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(from: u32, to: u32, bytes_per_s: u64) -> RateWindow {
        RateWindow { from_minute: from, to_minute: to, bytes_per_s }
    }

    /// Sends `total` bytes in `frame`-sized pieces through the bucket on a simulated
    /// clock; returns the simulated seconds it took.
    fn simulated_seconds(rate: u64, total: u64, frame: u64) -> f64 {
        let start = Instant::now();
        let mut now = start;
        let mut bucket = TokenBucket::new(rate, now);
        let mut sent = 0;
        while sent < total {
            now += bucket.take(frame, now);
            sent += frame;
        }
        now.duration_since(start).as_secs_f64()
    }

    #[test]
    fn throughput_follows_the_rate_within_the_burst() {
        // 100 MB at 10 MB/s in 64 KiB frames: 10 s, less the initial burst (0.1 s).
        let secs = simulated_seconds(10_000_000, 100_000_000, 64 << 10);
        assert!((9.8..=10.0).contains(&secs), "{secs}");
        // Frames larger than a tenth of a second of traffic still pass, in debt.
        let secs = simulated_seconds(1_000_000, 10_000_000, 256 << 10);
        assert!((9.3..=10.1).contains(&secs), "{secs}");
    }

    #[test]
    fn no_rate_means_no_wait_and_idle_time_saves_only_a_burst() {
        let now = Instant::now();
        let mut unlimited = TokenBucket::new(0, now);
        assert_eq!(unlimited.take(u64::MAX / 2, now), Duration::ZERO);
        let mut b = TokenBucket::new(1_000_000, now);
        // An hour idle saves a tenth of a second's worth (at least 512 KiB), not an hour's.
        let later = now + Duration::from_secs(3600);
        assert_eq!(b.take(512 << 10, later), Duration::ZERO);
        assert!(b.take(100_000, later) > Duration::ZERO);
    }

    #[test]
    fn a_rate_change_applies_to_what_follows() {
        let now = Instant::now();
        let mut b = TokenBucket::new(1_000_000, now);
        b.take(512 << 10, now);
        b.set_rate(10_000_000, now);
        let wait = b.take(1_000_000, now);
        assert!((0.09..0.11).contains(&wait.as_secs_f64()), "{wait:?}");
    }

    #[test]
    fn the_schedule_picks_the_window_of_the_minute_and_wraps_midnight() {
        let office = window(8 * 60, 18 * 60, 1_000_000);
        let night = window(22 * 60, 6 * 60, 0);
        let schedule = [office, night];
        assert_eq!(rate_at(50_000_000, &schedule, 9 * 60), 1_000_000);
        assert_eq!(rate_at(50_000_000, &schedule, 18 * 60), 50_000_000, "windows end before `to`");
        assert_eq!(rate_at(50_000_000, &schedule, 23 * 60), 0);
        assert_eq!(rate_at(50_000_000, &schedule, 3 * 60), 0);
        assert_eq!(rate_at(50_000_000, &schedule, 7 * 60), 50_000_000);
        assert_eq!(rate_at(7, &[], 0), 7);
    }
}
