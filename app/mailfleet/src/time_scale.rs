//! `--time-scale N` and `--time-origin MS` of `mailfleet scheduler` and
//! `mailfleet api`: compressed time, a demo and test facility (never for
//! production). The process's clock runs N times faster than the wall
//! clock from the origin (default: when the process starts), so a season
//! of ticks, job runs and account events passes in minutes. Processes
//! given the same origin and scale stamp one timeline; `mailfleet demo`
//! starts its api and scheduler so. See `mailfleet_runtime::time::Clock`.

use clap::Args;
use mailfleet_runtime::time::{now_ms, Clock};

/// Compressed time (demo and tests only).
#[derive(Args, Debug, Clone, Default)]
pub struct TimeScaleArgs {
    /// DEMO/TEST ONLY: run the clock N times faster than the wall clock
    /// (event times run ahead of the real time; never in production).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub time_scale: Option<u32>,
    /// With --time-scale: the wall time (ms since the epoch) from which the
    /// clock runs fast; processes given the same origin agree. Default: now.
    #[arg(long, value_name = "MS", requires = "time_scale",
          value_parser = clap::value_parser!(i64).range(1..))]
    pub time_origin: Option<i64>,
}

impl TimeScaleArgs {
    /// The clock these flags ask for; a compressed one is logged loudly,
    /// naming `process`.
    pub fn clock(&self, process: &str) -> Clock {
        let Some(scale) = self.time_scale else {
            return Clock::Wall;
        };
        let origin_ms = self.time_origin.unwrap_or_else(now_ms);
        tracing::warn!(
            process,
            scale,
            origin_ms,
            "COMPRESSED TIME (--time-scale): a demo/test facility; event times run {scale} times \
             faster than the wall clock. Never use it in production"
        );
        Clock::Compressed { origin_ms, scale }
    }
}
