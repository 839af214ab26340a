//! Probes for the facts the policy decides on: power, network cost and the
//! local time.
//!
//! [`read`] asks `UPower` and `NetworkManager` on the D-Bus system bus first
//! ([`dbus`]); whatever they cannot answer comes from Linux's sysfs
//! power-supply tree (its root is a parameter, so tests build fake trees)
//! and from the default route's interface checked against the configured
//! `metered_interfaces` / `unmetered_interfaces`. The daemon polls every
//! `poll_interval` and re-reads at once when the bus announces a change. On
//! macOS ([`macos`]) power comes from `pmset`, the network's cost from the
//! primary interface's `EXPENSIVE` and `CONSTRAINED` kernel flags (what
//! `Network.framework` reports as `isExpensive` and `isConstrained`), and
//! Darwin notifications announce changes.

pub mod awake;
pub mod dbus;
pub mod macos;
pub mod sleep;

use std::fs;
use std::path::{Path, PathBuf};

use crate::policy::{Conditions, Network, Power};

/// Reads the current conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// A folder laid out like `/sys/class/power_supply`.
    pub power_supply_dir: PathBuf,
    /// A file laid out like `/proc/net/route`.
    pub route_file: PathBuf,
    /// Interfaces to treat as metered.
    pub metered_interfaces: Vec<String>,
    /// Interfaces to treat as unmetered.
    pub unmetered_interfaces: Vec<String>,
}

impl Probe {
    /// Reads power, network and the local time now.
    pub fn read(&self) -> Conditions {
        #[cfg(target_os = "macos")]
        let (power, network) = (macos::read_power(), macos::read_network(&self.metered_interfaces));
        #[cfg(not(target_os = "macos"))]
        let (power, network) = (
            read_power(&self.power_supply_dir),
            read_network(&self.route_file, &self.metered_interfaces, &self.unmetered_interfaces),
        );
        Conditions { power, network, minute_of_day: local_minute_of_day() }
    }
}

/// A stream that yields whenever the system announces a change of power or
/// network, so the daemon re-reads at once instead of at its next poll:
/// `UPower` and `NetworkManager` signals on Linux, Darwin notifications on
/// macOS. `None` when the system offers no such events.
#[cfg_attr(target_os = "macos", expect(clippy::unused_async, reason = "only the D-Bus connection awaits"))]
pub async fn changes() -> Option<std::pin::Pin<Box<dyn futures_util::Stream<Item = ()> + Send>>> {
    #[cfg(target_os = "macos")]
    {
        let stream = macos::watch_notifications(Path::new("/usr/bin/notifyutil"), &macos::CHANGE_KEYS)?;
        Some(Box::pin(stream))
    }
    #[cfg(not(target_os = "macos"))]
    {
        let stream = dbus::changes().await?;
        Some(Box::pin(stream))
    }
}

/// A metered network, told apart from the others as far as the system
/// allows: a data budget is counted per network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteredLink {
    /// What its count is kept under.
    pub key: String,
    /// What to call it (a profile's name, an interface).
    pub name: String,
}

/// Which metered network the machine is on, as the system names it:
/// `NetworkManager`'s primary connection (Linux), the router's hardware
/// address (macOS). `None` when it cannot tell (now).
pub async fn metered_link() -> Option<MeteredLink> {
    #[cfg(not(target_os = "macos"))]
    {
        let (uuid, id) = dbus::primary_connection().await?;
        let name = if id.is_empty() { uuid.clone() } else { id };
        Some(MeteredLink { key: format!("nm:{uuid}"), name })
    }
    #[cfg(target_os = "macos")]
    tokio::task::spawn_blocking(macos::read_network_signature).await.ok().flatten()
}

/// What to count a metered network under when the system cannot name it:
/// the metered interface from the config, else one "unknown metered
/// network".
pub fn fallback_link(probe: &Probe) -> MeteredLink {
    #[cfg(not(target_os = "macos"))]
    if let Some(interface) = default_route_interface(&probe.route_file).filter(|i| probe.metered_interfaces.contains(i))
    {
        return MeteredLink { key: format!("interface:{interface}"), name: interface };
    }
    #[cfg(target_os = "macos")]
    let _ = probe;
    MeteredLink { key: "unknown".into(), name: "unknown metered network".into() }
}

/// Reads the conditions: the system bus first (Linux), the local probes for the rest.
pub async fn read(probe: &Probe) -> Conditions {
    #[cfg(not(target_os = "macos"))]
    let bus = dbus::read().await;
    #[cfg(target_os = "macos")]
    let bus = dbus::BusReading::default();
    let local = probe.clone();
    let local = tokio::task::spawn_blocking(move || local.read()).await.unwrap_or(Conditions {
        power: Power::Unknown,
        network: Network::Unknown,
        minute_of_day: local_minute_of_day(),
    });
    Conditions {
        power: bus.power.unwrap_or(local.power),
        network: bus.network.unwrap_or(local.network),
        minute_of_day: local.minute_of_day,
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_owned())
}

/// Power from a sysfs power-supply tree: any online mains or USB supply, or
/// a battery that is not discharging (full on a charger), counts as
/// external power; a discharging battery as battery, with its capacity. A
/// machine without batteries runs on external power; without the tree at
/// all, power is unknown.
pub fn read_power(dir: &Path) -> Power {
    let Ok(entries) = fs::read_dir(dir) else { return Power::Unknown };
    let mut external = false;
    let mut discharging: Option<Option<u8>> = None;
    for entry in entries.flatten() {
        let supply = entry.path();
        let kind = read_trimmed(&supply.join("type")).unwrap_or_default();
        match kind.as_str() {
            "Battery" => {
                if !is_system_battery(&supply) {
                    continue;
                }
                let status = read_trimmed(&supply.join("status")).unwrap_or_default();
                let capacity = read_trimmed(&supply.join("capacity")).and_then(|c| c.parse::<u8>().ok());
                if status == "Discharging" {
                    discharging = Some(capacity.map(|c| c.min(100)));
                } else if matches!(status.as_str(), "Charging" | "Full" | "Not charging") {
                    external = true;
                }
            }
            _ => {
                if read_trimmed(&supply.join("online")).as_deref() == Some("1") {
                    external = true;
                }
            }
        }
    }
    match (external, discharging) {
        (true, _) | (false, None) => Power::External,
        (false, Some(percent)) => Power::Battery { percent },
    }
}

/// Whether the supply at `supply` (a battery) is present and powers the
/// system (not a mouse's or a headset's).
fn is_system_battery(supply: &Path) -> bool {
    read_trimmed(&supply.join("present")).as_deref() != Some("0")
        && read_trimmed(&supply.join("scope")).as_deref() != Some("Device")
}

/// Whether the machine has a battery of its own (a laptop), from the
/// sysfs power-supply tree at `dir` on Linux (`pmset` on macOS, where a
/// `dir` that exists stands in for it, as in tests); `None` when that
/// cannot be told.
pub fn has_battery(dir: &Path) -> Option<bool> {
    #[cfg(target_os = "macos")]
    if !dir.exists() {
        return macos::has_battery();
    }
    let entries = fs::read_dir(dir).ok()?;
    Some(
        entries.flatten().map(|e| e.path()).any(|supply| {
            read_trimmed(&supply.join("type")).as_deref() == Some("Battery") && is_system_battery(&supply)
        }),
    )
}

/// Network cost from the default route's interface and the configured lists.
pub fn read_network(route_file: &Path, metered: &[String], unmetered: &[String]) -> Network {
    let Some(interface) = default_route_interface(route_file) else { return Network::Unknown };
    if metered.contains(&interface) {
        Network::Metered { source: "metered_interfaces" }
    } else if unmetered.contains(&interface) {
        Network::Unmetered
    } else {
        Network::Unknown
    }
}

/// The interface of the default IPv4 route in a `/proc/net/route` file.
fn default_route_interface(route_file: &Path) -> Option<String> {
    let table = fs::read_to_string(route_file).ok()?;
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace();
        let (interface, destination) = (fields.next()?, fields.next()?);
        (destination == "00000000").then(|| interface.to_owned())
    })
}

/// Minutes since local midnight (UTC when the zone is unknown).
pub fn local_minute_of_day() -> u16 {
    let now = jiff::Zoned::now();
    u16::try_from(now.hour()).unwrap_or(0) * 60 + u16::try_from(now.minute()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supply(root: &Path, name: &str, files: &[(&str, &str)]) {
        let dir = root.join(name);
        fs::create_dir_all(&dir).expect("mkdir");
        for (file, content) in files {
            fs::write(dir.join(file), format!("{content}\n")).expect("write");
        }
    }

    #[test]
    fn power_from_fake_sysfs_trees() {
        type Setup = fn(&Path);
        let table: [(&str, Setup, Power); 6] = [
            (
                "on battery",
                |r| {
                    supply(r, "AC", &[("type", "Mains"), ("online", "0")]);
                    supply(r, "BAT0", &[("type", "Battery"), ("status", "Discharging"), ("capacity", "41")]);
                },
                Power::Battery { percent: Some(41) },
            ),
            (
                "on mains",
                |r| {
                    supply(r, "AC", &[("type", "Mains"), ("online", "1")]);
                    supply(r, "BAT0", &[("type", "Battery"), ("status", "Charging"), ("capacity", "41")]);
                },
                Power::External,
            ),
            (
                "full on a charger",
                |r| {
                    supply(r, "BAT0", &[("type", "Battery"), ("status", "Full"), ("capacity", "100")]);
                },
                Power::External,
            ),
            ("desktop without battery", |r| supply(r, "AC", &[("type", "Mains"), ("online", "1")]), Power::External),
            (
                "a mouse battery does not count",
                |r| {
                    supply(
                        r,
                        "hidpp_battery_0",
                        &[("type", "Battery"), ("scope", "Device"), ("status", "Discharging")],
                    );
                },
                Power::External,
            ),
            (
                "usb-c charger",
                |r| {
                    supply(r, "ucsi-source-psy-USBC000:001", &[("type", "USB"), ("online", "1")]);
                    supply(r, "BAT1", &[("type", "Battery"), ("status", "Discharging"), ("capacity", "90")]);
                },
                Power::External,
            ),
        ];
        for (name, setup, expected) in table {
            let dir = tempfile::tempdir().expect("tempdir");
            setup(dir.path());
            assert_eq!(read_power(dir.path()), expected, "{name}");
        }
        assert_eq!(read_power(Path::new("/nonexistent/power_supply")), Power::Unknown);
    }

    #[test]
    fn network_from_the_default_route() {
        let dir = tempfile::tempdir().expect("tempdir");
        let route = dir.path().join("route");
        fs::write(
            &route,
            "Iface\tDestination\tGateway\tFlags\n eth0\t0000A8C0\t00000000\t0001\nwwan0\t00000000\t0100A8C0\t0003\n",
        )
        .expect("write");
        let list = |names: &[&str]| names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(read_network(&route, &list(&["wwan0"]), &[]), Network::Metered { source: "metered_interfaces" });
        assert_eq!(read_network(&route, &[], &list(&["wwan0"])), Network::Unmetered);
        assert_eq!(read_network(&route, &[], &[]), Network::Unknown);
        assert_eq!(read_network(&dir.path().join("missing"), &list(&["wwan0"]), &[]), Network::Unknown);
    }
}
