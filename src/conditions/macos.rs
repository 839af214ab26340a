//! macOS probes, read through the system's own command-line tools so this
//! crate needs no unsafe FFI (it forbids `unsafe_code`):
//!
//! - power: `pmset -g batt` reports the providing power source and the
//!   internal battery's charge, the same facts as `IOKit`'s
//!   `IOPSGetProvidingPowerSourceType` and `IOPSCopyPowerSourcesInfo`;
//! - network cost: `route -n get default` names the primary interface (the
//!   IPv6 one when there is no IPv4 default route) and
//!   `ifconfig -v` prints its kernel flags. `EXPENSIVE` (set by configd for
//!   cellular, Personal Hotspot and WWAN links) and `CONSTRAINED` (Low Data
//!   Mode) are the flags that `Network.framework` reports as a path's
//!   `isExpensive` and `isConstrained`; a VPN's "effective interface" is
//!   followed to the link underneath it, as `Network.framework` does through
//!   the interface's delegate;
//! - changes: `notifyutil -1 KEY` exits when notifyd delivers the Darwin
//!   notification that `IOKit` posts for a power-source change or configd
//!   for a network change, so the daemon re-reads at once rather than at its
//!   next poll.
//!
//! The parsers and the notification watcher are plain Rust and are tested
//! on every platform; only the calls that run the macOS tools are gated.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::Stream;
use tokio::process::Command;
use tokio::sync::mpsc;

use super::MeteredLink;
use super::sleep::SleepEvent;
use crate::policy::{Network, Power};

/// Darwin notifications after which the conditions are read again:
/// `kIOPSNotifyPowerSource`, `kIOPSNotifyPercentChange` and
/// `kNotifySCNetworkChange`.
pub const CHANGE_KEYS: [&str; 3] = [
    "com.apple.system.powersources.source",
    "com.apple.system.powersources.percent",
    "com.apple.system.config.network_change",
];

/// Power from `pmset -g batt` output, e.g.
/// `Now drawing from 'Battery Power'` / ` -InternalBattery-0 (id=…)\t41%; discharging; …`.
/// `'UPS Power'` means the mains are out and a UPS's battery runs the
/// machine (its charge on the UPS's line).
pub fn parse_pmset(output: &str) -> Power {
    if output.contains("'AC Power'") {
        return Power::External;
    }
    let ups = output.contains("'UPS Power'");
    if !ups && !output.contains("'Battery Power'") {
        return Power::Unknown;
    }
    let percent = |line: &str| line.split('\t').nth(1)?.split('%').next()?.trim().parse::<u8>().ok();
    if ups {
        let percent = output.lines().skip(1).find(|l| !l.contains("InternalBattery")).and_then(percent);
        return Power::UpsBattery { percent };
    }
    Power::Battery { percent: output.lines().find(|l| l.contains("InternalBattery")).and_then(percent) }
}

/// The interface of the default route in `route -n get default` output
/// (`  interface: en0`); `None` when there is no default route.
pub fn parse_route_interface(output: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let value = line.trim_start().strip_prefix("interface:")?.trim();
        (!value.is_empty()).then(|| value.to_owned())
    })
}

/// What `ifconfig -v IFACE` says about an interface's cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceCost {
    /// The `EXPENSIVE` extended flag (`eflags`).
    pub expensive: bool,
    /// Low Data Mode: `constrained` on the first line or the `CONSTRAINED`
    /// flag in `xflags`.
    pub constrained: bool,
    /// The interface a VPN or tunnel actually sends through.
    pub effective: Option<String>,
}

/// Parses `ifconfig -v IFACE` output.
pub fn parse_ifconfig(output: &str) -> InterfaceCost {
    let mut cost = InterfaceCost::default();
    let flag_names = |rest: &str| -> Vec<String> {
        rest.split_once('<')
            .and_then(|(_, names)| names.split_once('>'))
            .map(|(names, _)| names.split(',').map(str::to_owned).collect())
            .unwrap_or_default()
    };
    for (index, line) in output.lines().enumerate() {
        let line = line.trim();
        if index == 0 {
            cost.constrained |= line.split_whitespace().any(|word| word == "constrained");
        } else if let Some(rest) = line.strip_prefix("eflags=") {
            cost.expensive |= flag_names(rest).iter().any(|name| name == "EXPENSIVE");
        } else if let Some(rest) = line.strip_prefix("xflags=") {
            cost.constrained |= flag_names(rest).iter().any(|name| name == "CONSTRAINED");
        } else if let Some(rest) = line.strip_prefix("effective interface:") {
            cost.effective = Some(rest.trim().to_owned()).filter(|name| !name.is_empty());
        }
    }
    cost
}

/// The network's cost from the primary interface's flags (and those of the
/// interfaces it sends through), with the configured `metered_interfaces`
/// counting as metered too. `None` from `route` (no default route) means
/// offline or unknown.
pub fn network_from(
    primary: Option<String>,
    metered_interfaces: &[String],
    mut ifconfig: impl FnMut(&str) -> Option<String>,
) -> Network {
    let Some(mut interface) = primary else { return Network::Unknown };
    // A tunnel's effective interface is one hop away; the bound guards against a loop.
    for _ in 0..4 {
        if metered_interfaces.contains(&interface) {
            return Network::Metered { source: "metered_interfaces" };
        }
        let Some(output) = ifconfig(&interface) else { return Network::Unknown };
        let cost = parse_ifconfig(&output);
        if cost.expensive {
            return Network::Metered { source: "macOS: expensive link" };
        }
        if cost.constrained {
            return Network::Metered { source: "macOS: Low Data Mode" };
        }
        match cost.effective {
            Some(next) if next != interface => interface = next,
            _ => return Network::Unmetered,
        }
    }
    Network::Unmetered
}

/// The router a Mac is connected through, from `IPConfiguration`'s network
/// signature (`IPv4.Router=192.168.1.1;IPv4.RouterHardwareAddress=…`, as
/// `ipconfig getsummary` prints it): keyed by the router's hardware
/// address, which a phone's hotspot keeps (the SSID needs Location
/// Services since macOS 14, which a launchd agent cannot get).
pub fn parse_network_signature(output: &str) -> Option<MeteredLink> {
    let signature = output.lines().find(|line| line.contains("IPv4.RouterHardwareAddress="))?;
    let field = |name: &str| {
        let start = signature.find(name)? + name.len();
        let value = signature[start..].split([';', ' ', '\t']).next()?.trim();
        (!value.is_empty()).then(|| value.to_owned())
    };
    let mac = field("IPv4.RouterHardwareAddress=")?.to_ascii_lowercase();
    let name = field("IPv4.Router=").map_or_else(|| format!("router {mac}"), |ip| format!("router {ip} ({mac})"));
    Some(MeteredLink { key: format!("router:{mac}"), name })
}

/// Runs `ipconfig getsummary` on the primary interface.
#[cfg(target_os = "macos")]
pub fn read_network_signature() -> Option<MeteredLink> {
    let route = run("/sbin/route", &["-n", "get", "default"])?;
    let interface = parse_route_interface(&route)?;
    parse_network_signature(&run("/usr/sbin/ipconfig", &["getsummary", &interface])?)
}

/// Whether `pmset -g batt` lists a battery of the machine's own (a laptop).
#[cfg(target_os = "macos")]
pub fn has_battery() -> Option<bool> {
    run("/usr/bin/pmset", &["-g", "batt"]).map(|out| out.contains("InternalBattery"))
}

/// Runs `pmset -g batt`.
#[cfg(target_os = "macos")]
pub fn read_power() -> Power {
    run("/usr/bin/pmset", &["-g", "batt"]).map_or(Power::Unknown, |out| parse_pmset(&out))
}

/// Runs `route -n get default` (IPv4, else IPv6) and `ifconfig -v` on the
/// interfaces it names.
#[cfg(target_os = "macos")]
pub fn read_network(metered_interfaces: &[String]) -> Network {
    let route = |family: &[&str]| {
        let args = [&["-n", "get"], family, &["default"]].concat();
        run("/sbin/route", &args).and_then(|out| parse_route_interface(&out))
    };
    let primary = route(&[]).or_else(|| route(&["-inet6"]));
    network_from(primary, metered_interfaces, |interface| run("/sbin/ifconfig", &["-v", interface]))
}

#[cfg(target_os = "macos")]
fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program).args(args).stdin(std::process::Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `kIOPMSystemPowerStateNotify`, which power management posts whenever the
/// system begins a sleep, a wake or a maintenance wake (`IOKitUser`'s
/// `IOPMLibPrivate.h`; Time Machine runs on it). It is asynchronous: it
/// cannot delay a sleep, but it tells of a wake at once.
pub const POWER_STATE_KEY: &str = "com.apple.powermanagement.systempowerstate";

/// Sends [`SleepEvent::Woke`] to `events` whenever `program` (`notifyutil`)
/// reports a change of the system's power state: the conditions are then
/// read again, and uploads wait for the hysteresis. A change at the start
/// of a sleep holds uploads just the same, which is what a sleep wants.
pub async fn watch_power_state(program: &Path, events: mpsc::Sender<SleepEvent>) {
    use futures_util::StreamExt as _;
    let Some(mut changes) = watch_notifications(program, &[POWER_STATE_KEY]) else { return };
    while changes.next().await.is_some() {
        if events.send(SleepEvent::Woke).await.is_err() {
            return;
        }
    }
}

/// A stream that yields whenever one of `keys` is posted, by running
/// `program -1 KEY` (`notifyutil`'s "wait for one notification, print the
/// key, exit") for each key, again after each notification. A key whose
/// watcher fails or prints anything but its own name (notifyd refused the
/// registration) is given up with a warning and left to polling; `None`
/// when `program` does not exist.
pub fn watch_notifications(program: &Path, keys: &[&str]) -> Option<impl Stream<Item = ()> + Unpin + Send + use<>> {
    if !program.exists() {
        return None;
    }
    let (tx, rx) = mpsc::channel(8);
    for key in keys {
        tokio::spawn(watch_key(program.to_owned(), (*key).to_owned(), tx.clone()));
    }
    Some(Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|()| ((), rx)) })))
}

/// The shortest time between two runs of a key's watcher, so a watcher that
/// keeps returning at once cannot spin.
const MIN_GAP: Duration = Duration::from_secs(1);

async fn watch_key(program: PathBuf, key: String, tx: mpsc::Sender<()>) {
    loop {
        let started = tokio::time::Instant::now();
        let child = Command::new(&program)
            .args(["-1", &key])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(child) => child,
            Err(e) => {
                tracing::warn!("cannot run {} to watch {key}: {e}; polling instead", program.display());
                return;
            }
        };
        let out = tokio::select! {
            out = child.wait_with_output() => out,
            () = tx.closed() => return,
        };
        let delivered = out.as_ref().is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).lines().any(|line| line.trim() == key)
        });
        if !delivered {
            let said = out.map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned()).unwrap_or_default();
            tracing::warn!("{} could not watch {key} ({said}); polling instead", program.display());
            return;
        }
        if tx.send(()).await.is_err() {
            return;
        }
        tokio::time::sleep_until(started + MIN_GAP).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_is_known_by_its_routers_hardware_address() {
        let summary = "<dictionary> {\n  InterfaceType : WiFi\n  \
            NetworkSignature : IPv4.Router=172.20.10.1;IPv4.RouterHardwareAddress=AA:BB:CC:00:11:22\n}";
        let link = parse_network_signature(summary).expect("a signature");
        assert_eq!(link.key, "router:aa:bb:cc:00:11:22");
        assert_eq!(link.name, "router 172.20.10.1 (aa:bb:cc:00:11:22)");
        assert_eq!(parse_network_signature("  InterfaceType : WiFi\n"), None);
    }

    #[test]
    fn pmset_output() {
        let battery = "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=4653155)\t41%; discharging; 3:12 remaining present: true\n";
        let ac = "Now drawing from 'AC Power'\n -InternalBattery-0 (id=4653155)\t100%; charged; 0:00 remaining present: true\n";
        assert_eq!(parse_pmset(battery), Power::Battery { percent: Some(41) });
        assert_eq!(parse_pmset(ac), Power::External);
        assert_eq!(parse_pmset(""), Power::Unknown);
    }

    /// Regression: a UPS running on its own battery during a power cut was
    /// read as mains power, and uploads went on draining it.
    #[test]
    fn ups_power_is_a_battery() {
        let ups =
            "Now drawing from 'UPS Power'\n -CP1500PFCLCD (id=1234)\t87%; discharging; 0:25 remaining present: true\n";
        assert_eq!(parse_pmset(ups), Power::UpsBattery { percent: Some(87) });
    }

    const ROUTE: &str = "   route to: default\ndestination: default\n       mask: default\n    gateway: 172.20.10.1\n  interface: en0\n      flags: <UP,GATEWAY,DONE,STATIC,PRCLONING,GLOBAL>\n recvpipe  sendpipe  ssthresh  rtt,msec    rttvar  hopcount      mtu     expire\n       0         0         0         0         0         0      1500         0\n";

    const WIFI: &str = "en0: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500 index 11\n\teflags=412080<ECN_DISABLE,CHANNEL_DRV,CA,SENDLIST>\n\toptions=6460<TSO4,TSO6,CHANNEL_IO,PARTIAL_CSUM,ZEROINVERT_CSUM>\n\tether 3c:22:fb:00:00:01\n\tinet 192.168.1.20 netmask 0xffffff00 broadcast 192.168.1.255\n\tstatus: active\n\ttype: Wi-Fi\n";

    const HOTSPOT: &str = "en0: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500 index 11\n\teflags=41a080<EXPENSIVE,ECN_DISABLE,CHANNEL_DRV,CA,SENDLIST>\n\tstatus: active\n\ttype: Wi-Fi\n";

    const LOW_DATA: &str = "en0: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500 index 11 constrained\n\teflags=412080<ECN_DISABLE,CHANNEL_DRV,CA,SENDLIST>\n\txflags=204<NOAUTONX,CONSTRAINED>\n\tstatus: active\n";

    const VPN: &str = "utun4: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> mtu 1380 index 24\n\teflags=5002080<TXSTART,NOAUTOIPV6LL,ECN_ENABLE,CHANNEL_DRV>\n\tinet 10.8.0.2 --> 10.8.0.1 netmask 0xffffffff\n\teffective interface: en0\n\ttype: Other\n";

    const TUNNEL_1: &str = "utun1: flags=8051<UP> mtu 1380\n\teffective interface: utun2\n";

    const TUNNEL_2: &str = "utun2: flags=8051<UP> mtu 1380\n\teffective interface: utun1\n";

    #[test]
    fn route_names_the_primary_interface() {
        assert_eq!(parse_route_interface(ROUTE).as_deref(), Some("en0"));
        assert_eq!(parse_route_interface("route: writing to routing socket: not in table\n"), None);
    }

    #[test]
    fn ifconfig_flags() {
        assert_eq!(parse_ifconfig(WIFI), InterfaceCost::default());
        assert_eq!(parse_ifconfig(HOTSPOT), InterfaceCost { expensive: true, ..InterfaceCost::default() });
        assert_eq!(parse_ifconfig(LOW_DATA), InterfaceCost { constrained: true, ..InterfaceCost::default() });
        assert_eq!(parse_ifconfig(VPN).effective.as_deref(), Some("en0"));
    }

    #[test]
    fn network_cost_follows_the_route_and_tunnels() {
        type Table<'a> = &'a [(&'a str, &'a str)];
        let fake = |table: Table<'static>| {
            move |name: &str| table.iter().find(|(iface, _)| *iface == name).map(|(_, out)| (*out).to_owned())
        };
        let none: &[String] = &[];
        let primary = |name: &str| Some(name.to_owned());
        assert_eq!(network_from(primary("en0"), none, fake(&[("en0", WIFI)])), Network::Unmetered);
        assert_eq!(
            network_from(primary("en0"), none, fake(&[("en0", HOTSPOT)])),
            Network::Metered { source: "macOS: expensive link" }
        );
        assert_eq!(
            network_from(primary("en0"), none, fake(&[("en0", LOW_DATA)])),
            Network::Metered { source: "macOS: Low Data Mode" }
        );
        // A VPN over a hotspot is as expensive as the hotspot.
        assert_eq!(
            network_from(primary("utun4"), none, fake(&[("utun4", VPN), ("en0", HOTSPOT)])),
            Network::Metered { source: "macOS: expensive link" }
        );
        assert_eq!(network_from(primary("utun4"), none, fake(&[("utun4", VPN), ("en0", WIFI)])), Network::Unmetered);
        // The configured list adds interfaces macOS does not flag (a phone tethered over USB).
        let listed = ["en7".to_owned()];
        assert_eq!(
            network_from(primary("en7"), &listed, fake(&[("en7", WIFI)])),
            Network::Metered { source: "metered_interfaces" }
        );
        // No default route, or ifconfig failing: unknown.
        assert_eq!(network_from(None, none, fake(&[])), Network::Unknown);
        assert_eq!(network_from(primary("en0"), none, fake(&[])), Network::Unknown);
        // Two tunnels naming each other do not loop.
        assert_eq!(
            network_from(primary("utun1"), none, fake(&[("utun1", TUNNEL_1), ("utun2", TUNNEL_2)])),
            Network::Unmetered
        );
    }

    /// A stand-in for `notifyutil -1 KEY`, written as a shell script.
    fn fake_notifyutil(dir: &Path, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let program = dir.join("notifyutil");
        std::fs::write(&program, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        program
    }

    #[tokio::test]
    async fn notifications_wake_the_watcher() {
        use futures_util::StreamExt as _;
        use std::io::Write as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("post");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(status.success());
        // Like notifyutil, the script waits for a notification (a line on
        // the FIFO), prints the key and exits.
        let program =
            fake_notifyutil(dir.path(), &format!("read line < '{}'\n[ \"$1\" = -1 ] && echo \"$2\"", fifo.display()));
        // Held open for reading and writing, the FIFO never blocks the test:
        // a line posted before the script runs waits in the pipe for it.
        let mut post = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).expect("open fifo");
        let mut changes = watch_notifications(&program, &["com.example.key"]).expect("watcher");
        for _ in 0..2 {
            post.write_all(b"posted\n").expect("post");
            let woke = tokio::time::timeout(Duration::from_secs(10), changes.next()).await;
            assert_eq!(woke.expect("a change within 10 s"), Some(()));
        }
    }

    #[tokio::test]
    async fn a_change_of_power_state_counts_as_a_wake() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("post");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(status.success());
        let program = fake_notifyutil(
            dir.path(),
            &format!("read line < '{}'\n[ \"$2\" = {POWER_STATE_KEY} ] && echo \"$2\"", fifo.display()),
        );
        let mut post = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).expect("open fifo");
        let (events, mut seen) = mpsc::channel(4);
        tokio::spawn(async move { watch_power_state(&program, events).await });
        post.write_all(b"posted\n").expect("post");
        let event = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await;
        assert_eq!(event.expect("an event within 10 s"), Some(SleepEvent::Woke));
    }

    #[tokio::test]
    async fn a_refused_registration_ends_the_stream_instead_of_spinning() {
        use futures_util::StreamExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        // notifyutil prints "KEY: Failed" and exits 0 at once when notifyd refuses.
        let program = fake_notifyutil(dir.path(), "echo \"$2: Failed\"");
        let mut changes = watch_notifications(&program, &["com.example.key"]).expect("watcher");
        let end = tokio::time::timeout(Duration::from_secs(10), changes.next()).await;
        assert_eq!(end.expect("the stream ends"), None);
        assert!(watch_notifications(&dir.path().join("missing"), &["k"]).is_none());
    }
}
