//! The conditions policy: a pure function from what the machine is doing
//! (power, network, time of day) and the `[policy]` config to `Run` or
//! `HoldOff(reason)`, plus the hysteresis that keeps a flapping charger or
//! Wi-Fi from starting and stopping uploads over and over.

use std::fmt;
use std::time::Duration;

use crate::model::WaitingOn;

/// Power as a probe reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// On mains (a full battery on a charger counts too), or no battery at all.
    External,
    /// Running on battery, with its charge when known.
    Battery {
        /// Charge in percent.
        percent: Option<u8>,
    },
    /// Mains power is out and a UPS runs the machine on its own battery
    /// (macOS reports it as drawing from `'UPS Power'`).
    UpsBattery {
        /// The UPS's charge in percent, when known.
        percent: Option<u8>,
    },
    /// The probe could not tell.
    Unknown,
}

/// The network as a probe reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Online and not metered.
    Unmetered,
    /// Online on a metered (or guessed-metered) link; `source` says who said so.
    Metered {
        /// E.g. `NetworkManager`, `config (wwan0)`.
        source: &'static str,
    },
    /// The probe could not tell; treated as unmetered.
    Unknown,
}

/// What to do on battery or a metered link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Hold uploads back.
    Hold,
    /// Upload anyway.
    Allow,
}

/// A daily time window, in minutes since midnight; `start > end` wraps midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First minute inside the window.
    pub start: u16,
    /// First minute after it.
    pub end: u16,
}

impl Window {
    /// Parses `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Option<Window> {
        let (start, end) = text.split_once('-')?;
        Some(Window { start: parse_clock(start)?, end: parse_clock(end)? })
    }

    /// Whether minute-of-day `minute` is inside.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start <= self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

/// Whole minutes from `minute` (of the day) until uploads leave the
/// allowed `windows` (windows that meet or overlap count as one): `None`
/// when there are none (any time is allowed), 0 outside them, and never
/// more than a day.
pub fn window_left(windows: &[Window], minute: u16) -> Option<u16> {
    if windows.is_empty() {
        return None;
    }
    let inside = |m: u16| windows.iter().any(|w| w.contains(m % MINUTES_PER_DAY));
    Some((0..MINUTES_PER_DAY).find(|&step| !inside(minute + step)).unwrap_or(MINUTES_PER_DAY))
}

/// Whole minutes the allowed window around `minute` has been open (0
/// outside the windows; `None` when there are none).
pub fn window_open_for(windows: &[Window], minute: u16) -> Option<u16> {
    if windows.is_empty() {
        return None;
    }
    let inside = |m: u16| windows.iter().any(|w| w.contains(m % MINUTES_PER_DAY));
    if !inside(minute) {
        return Some(0);
    }
    let back = |step: u16| (minute + MINUTES_PER_DAY - step) % MINUTES_PER_DAY;
    Some((1..MINUTES_PER_DAY).find(|&step| !inside(back(step))).map_or(MINUTES_PER_DAY, |step| step - 1))
}

/// Minutes in a day.
const MINUTES_PER_DAY: u16 = 24 * 60;

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}–{}", hm(self.start), hm(self.end))
    }
}

/// Parses `HH:MM` into minutes since midnight.
pub fn parse_clock(text: &str) -> Option<u16> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60 && m.to_string().len() <= 2).then_some(h * 60 + m)
}

/// The `[policy]` settings the decision uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// On battery.
    pub on_battery: Rule,
    /// Hold below this charge even when battery use is allowed.
    pub min_battery_percent: u8,
    /// On a metered link.
    pub metered: Rule,
    /// Allowed windows (any of them); empty means any time.
    pub windows: Vec<Window>,
    /// How long conditions must be good before work starts again.
    pub hysteresis: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            on_battery: Rule::Hold,
            min_battery_percent: 0,
            metered: Rule::Hold,
            windows: Vec::new(),
            hysteresis: Duration::from_secs(30),
        }
    }
}

/// One-run overrides (`photosync backup --now`, `--allow-metered`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Ignore power and time-window holds.
    pub ignore_power_and_window: bool,
    /// Ignore metered holds.
    pub allow_metered: bool,
}

/// The facts a decision is made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conditions {
    /// Power.
    pub power: Power,
    /// Network.
    pub network: Network,
    /// Local time, minutes since midnight.
    pub minute_of_day: u16,
}

/// Why work is held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldReason {
    /// The system is going to sleep (or has just woken, until the
    /// conditions have been read again and held good for the hysteresis).
    Sleeping,
    /// On battery and the policy holds on battery.
    OnBattery {
        /// Charge, when known.
        percent: Option<u8>,
        /// The battery is a UPS's: mains power is out.
        ups: bool,
    },
    /// On battery below the minimum charge.
    LowBattery {
        /// Charge.
        percent: u8,
        /// The configured minimum.
        min: u8,
    },
    /// On a metered link.
    Metered {
        /// Who said it is metered.
        source: &'static str,
    },
    /// Outside every allowed window.
    OutsideWindow {
        /// The windows.
        windows: Vec<Window>,
    },
}

impl HoldReason {
    /// The condition a held job waits on.
    pub fn waiting_on(&self) -> WaitingOn {
        match self {
            Self::Sleeping => WaitingOn::Sleep,
            Self::OnBattery { .. } | Self::LowBattery { .. } => WaitingOn::Power,
            Self::Metered { .. } => WaitingOn::Network,
            Self::OutsideWindow { .. } => WaitingOn::Window,
        }
    }
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sleeping => write!(f, "the system is going to sleep (or has just woken)"),
            Self::OnBattery { percent: Some(p), ups: false } => write!(f, "on battery ({p}%)"),
            Self::OnBattery { percent: None, ups: false } => write!(f, "on battery"),
            Self::OnBattery { percent: Some(p), ups: true } => write!(f, "on UPS battery ({p}%)"),
            Self::OnBattery { percent: None, ups: true } => write!(f, "on UPS battery"),
            Self::LowBattery { percent, min } => write!(f, "on battery {percent}% < {min}%"),
            Self::Metered { source } => write!(f, "metered connection ({source})"),
            Self::OutsideWindow { windows } => {
                let list: Vec<String> = windows.iter().map(ToString::to_string).collect();
                write!(f, "outside window {}", list.join(", "))
            }
        }
    }
}

/// The policy's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Uploads may run.
    Run,
    /// Hold uploads back.
    HoldOff(HoldReason),
}

/// Combines every condition with AND: the first that holds decides.
pub fn decide(conditions: &Conditions, policy: &Policy, overrides: Overrides) -> Decision {
    let battery = match conditions.power {
        Power::Battery { percent } => Some((percent, false)),
        Power::UpsBattery { percent } => Some((percent, true)),
        Power::External | Power::Unknown => None,
    };
    if !overrides.ignore_power_and_window
        && let Some((percent, ups)) = battery
    {
        if policy.on_battery == Rule::Hold {
            return Decision::HoldOff(HoldReason::OnBattery { percent, ups });
        }
        if let Some(p) = percent
            && p < policy.min_battery_percent
        {
            return Decision::HoldOff(HoldReason::LowBattery { percent: p, min: policy.min_battery_percent });
        }
    }
    if !overrides.allow_metered
        && policy.metered == Rule::Hold
        && let Network::Metered { source } = conditions.network
    {
        return Decision::HoldOff(HoldReason::Metered { source });
    }
    if !overrides.ignore_power_and_window
        && !policy.windows.is_empty()
        && !policy.windows.iter().any(|w| w.contains(conditions.minute_of_day))
    {
        return Decision::HoldOff(HoldReason::OutsideWindow { windows: policy.windows.clone() });
    }
    Decision::Run
}

/// Applies hysteresis: a hold takes effect at once; work starts again only
/// after `Run` has been decided continuously for the hysteresis time.
#[derive(Debug, Clone)]
pub struct Hysteresis {
    effective: Decision,
    good_since: Option<Duration>,
}

impl Hysteresis {
    /// Starts in `initial` (no waiting for the first decision).
    pub fn new(initial: Decision) -> Self {
        Self { effective: initial, good_since: None }
    }

    /// Feeds the raw decision at monotonic time `now`; returns the effective one.
    pub fn update(&mut self, raw: Decision, now: Duration, hysteresis: Duration) -> &Decision {
        match raw {
            Decision::HoldOff(_) => {
                self.effective = raw;
                self.good_since = None;
            }
            Decision::Run if self.effective == Decision::Run => {}
            Decision::Run => {
                let since = *self.good_since.get_or_insert(now);
                if now.saturating_sub(since) >= hysteresis {
                    self.effective = Decision::Run;
                    self.good_since = None;
                }
            }
        }
        &self.effective
    }

    /// When a pending `Run` would take effect, if one is pending.
    pub fn pending_until(&self, hysteresis: Duration) -> Option<Duration> {
        self.good_since.map(|since| since + hysteresis)
    }

    /// The effective decision.
    pub fn effective(&self) -> &Decision {
        &self.effective
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(h: u16, m: u16) -> u16 {
        h * 60 + m
    }

    fn conditions(power: Power, network: Network, minute_of_day: u16) -> Conditions {
        Conditions { power, network, minute_of_day }
    }

    #[test]
    fn decisions() {
        let hold = Policy::default();
        let allow_battery = Policy { on_battery: Rule::Allow, min_battery_percent: 50, ..Policy::default() };
        let night = Policy { windows: vec![Window::parse("22:00-07:00").expect("window")], ..Policy::default() };
        let nm = Network::Metered { source: "NetworkManager" };
        let none = Overrides::default();
        let now = Overrides { ignore_power_and_window: true, allow_metered: false };
        let table: Vec<(&str, Conditions, &Policy, Overrides, Option<&str>)> = vec![
            ("ac, unmetered", conditions(Power::External, Network::Unmetered, at(12, 0)), &hold, none, None),
            (
                "battery held",
                conditions(Power::Battery { percent: Some(41) }, Network::Unmetered, 0),
                &hold,
                none,
                Some("on battery (41%)"),
            ),
            (
                "a UPS on its battery",
                conditions(Power::UpsBattery { percent: Some(87) }, Network::Unmetered, 0),
                &hold,
                none,
                Some("on UPS battery (87%)"),
            ),
            (
                "a UPS low",
                conditions(Power::UpsBattery { percent: Some(20) }, Network::Unmetered, 0),
                &allow_battery,
                none,
                Some("on battery 20% < 50%"),
            ),
            (
                "battery allowed",
                conditions(Power::Battery { percent: Some(80) }, Network::Unmetered, 0),
                &allow_battery,
                none,
                None,
            ),
            (
                "battery low",
                conditions(Power::Battery { percent: Some(41) }, Network::Unmetered, 0),
                &allow_battery,
                none,
                Some("on battery 41% < 50%"),
            ),
            ("metered", conditions(Power::External, nm, 0), &hold, none, Some("metered connection (NetworkManager)")),
            (
                "metered, --now",
                conditions(Power::External, nm, 0),
                &hold,
                now,
                Some("metered connection (NetworkManager)"),
            ),
            (
                "metered allowed",
                conditions(Power::External, nm, 0),
                &hold,
                Overrides { allow_metered: true, ..none },
                None,
            ),
            ("unknown network", conditions(Power::Unknown, Network::Unknown, 0), &hold, none, None),
            ("in window", conditions(Power::External, Network::Unmetered, at(23, 30)), &night, none, None),
            (
                "in window after midnight",
                conditions(Power::External, Network::Unmetered, at(6, 59)),
                &night,
                none,
                None,
            ),
            (
                "outside window",
                conditions(Power::External, Network::Unmetered, at(7, 0)),
                &night,
                none,
                Some("outside window 22:00–07:00"),
            ),
            ("outside window, --now", conditions(Power::External, Network::Unmetered, at(12, 0)), &night, now, None),
            ("battery, --now", conditions(Power::Battery { percent: None }, Network::Unmetered, 0), &hold, now, None),
        ];
        for (name, c, policy, overrides, expected) in table {
            let got = match decide(&c, policy, overrides) {
                Decision::Run => None,
                Decision::HoldOff(reason) => Some(reason.to_string()),
            };
            assert_eq!(got.as_deref(), expected, "{name}");
        }
    }

    #[test]
    fn the_minutes_left_in_a_window_count_across_midnight_and_joined_windows() {
        let windows = |texts: &[&str]| texts.iter().map(|t| Window::parse(t).expect("window")).collect::<Vec<_>>();
        let clock = |hhmm: &str| parse_clock(hhmm).expect("clock");
        assert_eq!(window_left(&[], clock("12:00")), None);
        assert_eq!(window_left(&windows(&["22:00-07:00"]), clock("23:30")), Some(450));
        assert_eq!(window_left(&windows(&["22:00-07:00"]), clock("12:00")), Some(0));
        assert_eq!(window_left(&windows(&["01:00-02:00", "02:00-02:30"]), clock("01:50")), Some(40));
        assert_eq!(window_left(&windows(&["00:00-00:00"]), clock("05:00")), Some(0), "an empty window");
        assert_eq!(window_open_for(&windows(&["22:00-07:00"]), clock("01:00")), Some(180));
        assert_eq!(window_open_for(&windows(&["22:00-07:00"]), clock("12:00")), Some(0));
    }

    #[test]
    fn windows_parse_and_wrap() {
        assert_eq!(Window::parse("08:30-17:00"), Some(Window { start: 510, end: 1020 }));
        for bad in ["8-17", "25:00-01:00", "08:60-09:00", "08:00", ""] {
            assert_eq!(Window::parse(bad), None, "{bad}");
        }
        let w = Window::parse("22:00-07:00").expect("window");
        assert!(w.contains(at(22, 0)) && w.contains(at(0, 0)) && !w.contains(at(7, 0)) && !w.contains(at(21, 59)));
    }

    #[test]
    fn hysteresis_delays_resuming_but_not_holding() {
        let h = Duration::from_secs(30);
        let hold = Decision::HoldOff(HoldReason::OnBattery { percent: None, ups: false });
        let mut state = Hysteresis::new(Decision::Run);
        let s = Duration::from_secs;
        let steps = [
            (s(0), hold.clone(), hold.clone()),
            (s(10), Decision::Run, hold.clone()),
            (s(25), hold.clone(), hold.clone()),
            (s(30), Decision::Run, hold.clone()),
            (s(59), Decision::Run, hold.clone()),
            (s(60), Decision::Run, Decision::Run),
            (s(61), hold.clone(), hold.clone()),
        ];
        for (now, raw, expected) in steps {
            assert_eq!(state.update(raw, now, h), &expected, "at {now:?}");
        }
    }
}
