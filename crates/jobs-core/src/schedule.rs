//! Periodic jobs: a cron schedule that enqueues a job at each of its ticks, exactly once
//! across every worker.
//!
//! Every worker given a [`Schedule`] (`Worker::schedule`) looks, each time it runs its
//! rescue (every second), for the schedule's latest tick at or before its clock's now and
//! enqueues that tick's job. The job's id is made from the schedule's name and the tick (a
//! UUID v7 whose time is the tick's), so the store's primary key lets one worker's insert
//! through and answers every other worker with the job already there: one job per tick, with
//! no table or lock besides the jobs themselves.
//!
//! - **Time zone**: the cron pattern is read in the schedule's IANA time zone (UTC unless
//!   [`Schedule::in_timezone`] names one), so `0 3 * * *` in `Europe/Berlin` is 03:00 there
//!   all year round.
//! - **No overlap**: a tick's job goes on the schedule's own resource (its name), so while the
//!   previous tick's job is still active, the new tick waits; it is enqueued as soon as that
//!   job ends ([`Tick::Overlapping`] until then).
//! - **Catch-up after downtime** ([`CatchUp`]): by default (`One`) the latest missed tick
//!   runs once, however many were missed; with `Skip`, a tick runs only within its `grace`
//!   after the tick's time, so ticks missed by a longer downtime are skipped.
//! - Keep the workers' job retention longer than the schedule's longest gap between ticks:
//!   a tick's job is what records that the tick ran.

use std::hash::Hasher as _;
use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use crate::job::{Job, JobId, NewJob};
use crate::lock::{AcquireRequest, LockService};
use crate::store::{Insert, StoreError};

/// What a schedule does with ticks missed while no worker ran it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// The latest missed tick runs once (the default).
    #[default]
    One,
    /// A tick runs only within `grace` after its time; older ones are skipped.
    Skip {
        /// How late a tick may still start.
        grace: Duration,
    },
}

/// A schedule that cannot be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// The cron pattern does not parse.
    #[error("schedule {name:?}: the cron pattern {pattern:?} is invalid: {reason}")]
    Pattern {
        /// The schedule's name.
        name: String,
        /// The pattern given.
        pattern: String,
        /// What the parser said.
        reason: String,
    },
    /// The time zone is not an IANA name this build knows.
    #[error(
        "schedule {name:?}: unknown time zone {timezone:?} (an IANA name such as Europe/Berlin)"
    )]
    TimeZone {
        /// The schedule's name.
        name: String,
        /// The name given.
        timezone: String,
    },
    /// A schedule needs a name and a job type.
    #[error("a schedule needs a name and a job type")]
    Empty,
}

/// A cron schedule of one job type: see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    cron: Cron,
    timezone: Tz,
    job_type: String,
    payload: serde_json::Value,
    catch_up: CatchUp,
}

/// What one look at a schedule did.
#[derive(Debug, Clone, PartialEq)]
pub enum Tick {
    /// The schedule has no tick at or before now.
    NotYet,
    /// This look enqueued the tick's job.
    Enqueued(Job),
    /// The tick's job exists already (another worker, or an earlier look, enqueued it).
    AlreadyEnqueued,
    /// The previous tick's job is still active: the tick waits for it to end.
    Overlapping(Job),
    /// The tick is older than [`CatchUp::Skip`] allows: skipped.
    Skipped,
}

impl Schedule {
    /// A schedule named `name` (also the resource its jobs run on) enqueueing a job of
    /// `job_type` with an empty object as payload at each tick of the five-field cron
    /// `pattern` (six with seconds first), in UTC.
    pub fn new(name: &str, pattern: &str, job_type: &str) -> Result<Self, ScheduleError> {
        if name.is_empty() || job_type.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let cron = Cron::from_str(pattern).map_err(|error| ScheduleError::Pattern {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
            reason: error.to_string(),
        })?;
        Ok(Self {
            name: name.to_owned(),
            cron,
            timezone: Tz::UTC,
            job_type: job_type.to_owned(),
            payload: serde_json::json!({}),
            catch_up: CatchUp::default(),
        })
    }

    /// The same schedule read in the IANA time zone `timezone` (`Europe/Berlin`).
    pub fn in_timezone(mut self, timezone: &str) -> Result<Self, ScheduleError> {
        self.timezone = timezone.parse().map_err(|_| ScheduleError::TimeZone {
            name: self.name.clone(),
            timezone: timezone.to_owned(),
        })?;
        Ok(self)
    }

    /// The same schedule with `payload` as each job's payload.
    pub fn with_payload(mut self, payload: serde_json::Value) -> Self {
        self.payload = payload;
        self
    }

    /// The same schedule with `catch_up` as its policy for missed ticks.
    pub fn with_catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// Its name: the resource of its jobs.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The type of its jobs.
    pub fn job_type(&self) -> &str {
        &self.job_type
    }

    /// The latest tick at or before `now`, if the pattern has one.
    pub fn latest_tick(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = now.with_timezone(&self.timezone);
        self.cron
            .find_previous_occurrence(&local, true)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }

    /// The first tick after `after`, if the pattern has one.
    pub fn next_tick(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.timezone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|tick| tick.with_timezone(&Utc))
    }

    /// The id of `tick`'s job: a UUID v7 with the tick's time, the rest from the schedule's
    /// name and the tick (FNV-1a, the same in every build), so every worker names it alike.
    pub fn job_id(&self, tick: DateTime<Utc>) -> JobId {
        let hash = |salt: u8| {
            let mut hasher = Fnv1a::default();
            hasher.write(self.name.as_bytes());
            hasher.write(&[salt]);
            hasher.write(&tick.timestamp_micros().to_le_bytes());
            hasher.finish().to_le_bytes()
        };
        let (first, second) = (hash(0), hash(1));
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&first);
        random[8..].copy_from_slice(&second[..2]);
        let millis = u64::try_from(tick.timestamp_millis()).unwrap_or(0);
        JobId::from_uuid(uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid())
    }
}

/// FNV-1a, 64 bits: a hash that every build computes alike (std's is allowed to change).
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl LockService {
    /// Enqueues `schedule`'s latest tick at or before the clock's now, unless its job
    /// exists, the previous tick's job is still active, or the catch-up policy skips it.
    /// Any number of workers may call this at once: one of them enqueues the tick.
    pub async fn enqueue_tick(&self, schedule: &Schedule) -> Result<Tick, StoreError> {
        let now = self.clock().now();
        let Some(tick) = schedule.latest_tick(now) else {
            return Ok(Tick::NotYet);
        };
        if let CatchUp::Skip { grace } = schedule.catch_up
            && chrono::Duration::from_std(grace).is_ok_and(|grace| now - tick > grace)
        {
            return Ok(Tick::Skipped);
        }
        let id = schedule.job_id(tick);
        match self.store().get(id).await {
            Ok(_) => return Ok(Tick::AlreadyEnqueued),
            Err(StoreError::NotFound(_)) => {}
            Err(error) => return Err(error),
        }
        let request =
            AcquireRequest::new(&schedule.name, &schedule.job_type, schedule.payload.clone());
        // No trace parent: a tick is not part of whatever span the worker's maintenance is in.
        let job = NewJob {
            id,
            ..self.new_job(request, now, &None)
        };
        match self.store().insert(job).await {
            Ok(Insert::Inserted(job)) => Ok(Tick::Enqueued(job)),
            Ok(Insert::Busy(active)) if active.id == id => Ok(Tick::AlreadyEnqueued),
            Ok(Insert::Busy(active)) => Ok(Tick::Overlapping(active)),
            // Another worker's insert of the same id won, and its job already ended: the
            // primary key refused ours.
            Err(error) => match self.store().get(id).await {
                Ok(_) => Ok(Tick::AlreadyEnqueued),
                Err(_) => Err(error),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn the_latest_tick_is_at_or_before_now_in_the_schedules_time_zone() {
        let nightly = Schedule::new("nightly", "0 3 * * *", "report").unwrap();
        assert_eq!(
            nightly.latest_tick(at("2030-01-02T03:00:00Z")),
            Some(at("2030-01-02T03:00:00Z"))
        );
        assert_eq!(
            nightly.latest_tick(at("2030-01-02T02:59:59Z")),
            Some(at("2030-01-01T03:00:00Z"))
        );
        // 03:00 in Berlin: 02:00 UTC in winter, 01:00 UTC in summer.
        let berlin = nightly.clone().in_timezone("Europe/Berlin").unwrap();
        assert_eq!(
            berlin.latest_tick(at("2030-01-02T12:00:00Z")),
            Some(at("2030-01-02T02:00:00Z"))
        );
        assert_eq!(
            berlin.latest_tick(at("2030-07-02T12:00:00Z")),
            Some(at("2030-07-02T01:00:00Z"))
        );
        assert_eq!(
            berlin.next_tick(at("2030-07-02T01:00:00Z")),
            Some(at("2030-07-03T01:00:00Z"))
        );
    }

    #[test]
    fn a_ticks_job_id_is_the_same_everywhere_and_sorts_by_tick() {
        let every_minute = Schedule::new("sweep", "* * * * *", "sweep").unwrap();
        let first = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        let second = first + chrono::Duration::minutes(1);
        assert_eq!(every_minute.job_id(first), every_minute.job_id(first));
        assert_ne!(every_minute.job_id(first), every_minute.job_id(second));
        assert!(every_minute.job_id(first).to_string() < every_minute.job_id(second).to_string());
        let other = Schedule::new("other", "* * * * *", "sweep").unwrap();
        assert_ne!(every_minute.job_id(first), other.job_id(first));
        // A pinned value: a change here would make workers of two builds enqueue one tick
        // twice.
        assert_eq!(
            every_minute.job_id(first).to_string(),
            "01b8dac5-b400-746a-9675-fa276ab9f7c8"
        );
    }

    #[test]
    fn bad_patterns_and_time_zones_are_refused_by_name() {
        let error = Schedule::new("broken", "61 * * * *", "x").unwrap_err();
        assert!(error.to_string().contains("\"61 * * * *\""), "{error}");
        let error = Schedule::new("zone", "* * * * *", "x")
            .unwrap()
            .in_timezone("Mars/Olympus")
            .unwrap_err();
        assert!(error.to_string().contains("Mars/Olympus"), "{error}");
        assert!(matches!(
            Schedule::new("", "* * * * *", "x"),
            Err(ScheduleError::Empty)
        ));
    }
}
