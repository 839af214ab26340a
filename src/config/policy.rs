//! `[policy]`: when uploads may run (power, network cost, time windows),
//! how the conditions are read, and the bandwidth timetable.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Section};

/// `[policy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// `hold` or `allow`.
    pub on_battery: Option<String>,
    /// Hold below this charge even when battery use is allowed.
    pub min_battery_percent: Option<u8>,
    /// `hold` or `allow`.
    pub metered: Option<String>,
    /// Interfaces to treat as metered (without `NetworkManager`).
    #[serde(default)]
    pub metered_interfaces: Vec<String>,
    /// Interfaces to treat as unmetered.
    #[serde(default)]
    pub unmetered_interfaces: Vec<String>,
    /// Allowed time-of-day windows, `HH:MM-HH:MM`.
    #[serde(default)]
    pub windows: Vec<String>,
    /// How long conditions must be good before work starts again.
    pub hysteresis: Option<String>,
    /// How often the daemon reads power and network.
    pub poll_interval: Option<String>,
    /// Where the power-supply tree is (default `/sys/class/power_supply`).
    pub power_supply_dir: Option<String>,
    /// Upload rate limit, e.g. `"2MiB"` or `"08:00,2MiB 18:00,off"`.
    pub bandwidth: Option<String>,
    /// Bytes per period on each metered network, e.g. `"2GiB/month"`.
    pub metered_budget: Option<String>,
    /// The day of the month a monthly budget starts again (default 1).
    pub metered_budget_reset_day: Option<u8>,
    /// `never` or `while-uploading`: hold off idle sleep while uploads run on mains.
    pub keep_awake: Option<String>,
    /// The longest time idle sleep is held off in one go (default 2h).
    pub keep_awake_max: Option<String>,
}

/// `[policy]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConfig {
    /// The decision's settings.
    pub rules: crate::policy::Policy,
    /// How the daemon reads conditions.
    pub probe: crate::conditions::Probe,
    /// How often the daemon reads them.
    pub poll_interval: Duration,
    /// Upload rate limits by time of day (all uploads together).
    pub bandwidth: crate::policy::Timetable,
    /// Bytes per period on each metered network, if limited.
    pub budget: Option<crate::policy::Budget>,
    /// How long idle sleep may be held off while uploads run on mains
    /// (`None`: never).
    pub keep_awake: Option<Duration>,
}

fn rule(section: &Section<'_>, name: &str, value: Option<&str>) -> Result<crate::policy::Rule, ConfigError> {
    match value {
        None | Some("hold") => Ok(crate::policy::Rule::Hold),
        Some("allow") => Ok(crate::policy::Rule::Allow),
        Some(other) => Err(section.error(name, &format!("`{other}` must be \"hold\" or \"allow\""))),
    }
}

impl PolicyConfig {
    /// Validates `[policy]` (absent: every default).
    #[allow(clippy::needless_pass_by_value)] // consumes the raw table
    pub fn parse(raw: RawPolicy, section: &Section<'_>) -> Result<PolicyConfig, ConfigError> {
        let min_battery_percent = raw.min_battery_percent.unwrap_or(0);
        if min_battery_percent > 100 {
            return Err(section.error("min_battery_percent", "must be between 0 and 100"));
        }
        let windows = raw
            .windows
            .iter()
            .map(|w| {
                crate::policy::Window::parse(w)
                    .ok_or_else(|| section.error("windows", &format!("`{w}` is not a window like \"22:00-07:00\"")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let hysteresis = match raw.hysteresis.as_deref() {
            Some("0s" | "0") => Duration::ZERO,
            other => section.duration("hysteresis", other, Duration::from_secs(30))?,
        };
        let rules = crate::policy::Policy {
            on_battery: rule(section, "on_battery", raw.on_battery.as_deref())?,
            min_battery_percent,
            metered: rule(section, "metered", raw.metered.as_deref())?,
            windows,
            hysteresis,
        };
        let power_supply_dir = match raw.power_supply_dir.as_deref() {
            Some(dir) => section.path("power_supply_dir", dir)?,
            None => PathBuf::from("/sys/class/power_supply"),
        };
        let bandwidth = match raw.bandwidth.as_deref() {
            None => crate::policy::Timetable::unlimited(),
            Some(text) => crate::policy::Timetable::parse(text).ok_or_else(|| {
                section.error("bandwidth", &format!("`{text}` is not a rate like \"2MiB\" or \"08:00,2MiB 18:00,off\""))
            })?,
        };
        let reset_day = raw.metered_budget_reset_day.unwrap_or(1);
        if !(1..=31).contains(&reset_day) {
            return Err(section.error("metered_budget_reset_day", "must be a day of the month, 1 to 31"));
        }
        let budget = match raw.metered_budget.as_deref() {
            None => None,
            Some(text) => Some(crate::policy::Budget::parse(text, reset_day).ok_or_else(|| {
                section.error(
                    "metered_budget",
                    &format!("`{text}` is not a budget like \"2GiB/month\", \"500MB/day\" or \"1GiB/week\""),
                )
            })?),
        };
        let keep_awake_max =
            section.duration("keep_awake_max", raw.keep_awake_max.as_deref(), Duration::from_hours(2))?;
        let keep_awake = match raw.keep_awake.as_deref() {
            None | Some("never") => None,
            Some("while-uploading") => Some(keep_awake_max),
            Some(other) => {
                return Err(section.error("keep_awake", &format!("`{other}` must be \"never\" or \"while-uploading\"")));
            }
        };
        Ok(PolicyConfig {
            bandwidth,
            budget,
            keep_awake,
            rules,
            probe: crate::conditions::Probe {
                power_supply_dir,
                route_file: PathBuf::from("/proc/net/route"),
                metered_interfaces: raw.metered_interfaces,
                unmetered_interfaces: raw.unmetered_interfaces,
            },
            poll_interval: section.duration("poll_interval", raw.poll_interval.as_deref(), Duration::from_secs(30))?,
        })
    }
}
