//! `UPower` and `NetworkManager` over the D-Bus system bus (the address comes
//! from `DBUS_SYSTEM_BUS_ADDRESS` when set, so tests can use a private bus).
//! Each answer is optional: a missing bus, service or property leaves that
//! fact to the fallback probes.

use std::time::Duration;

use zbus::{Connection, Proxy};

use crate::policy::{Network, Power};

/// How long a read may take before the fallback is used.
const TIMEOUT: Duration = Duration::from_secs(2);

/// What the system bus said.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusReading {
    /// From `UPower`: `OnBattery`, with the display device's `Percentage`.
    pub power: Option<Power>,
    /// From `NetworkManager`: the manager's `Metered` property.
    pub network: Option<Network>,
}

/// Reads power and network cost from the system bus.
pub async fn read() -> BusReading {
    let Ok(Ok(bus)) = tokio::time::timeout(TIMEOUT, Connection::system()).await else {
        return BusReading::default();
    };
    let (power, network) = tokio::join!(
        tokio::time::timeout(TIMEOUT, upower(&bus)),
        tokio::time::timeout(TIMEOUT, network_manager(&bus)),
    );
    BusReading { power: power.ok().flatten(), network: network.ok().flatten() }
}

async fn property<T>(bus: &Connection, service: &str, path: &str, interface: &str, name: &str) -> Option<T>
where
    T: TryFrom<zbus::zvariant::OwnedValue>,
    T::Error: Into<zbus::Error>,
{
    let proxy = Proxy::new(bus, service.to_owned(), path.to_owned(), interface.to_owned()).await.ok()?;
    proxy.get_property::<T>(name).await.ok()
}

async fn upower(bus: &Connection) -> Option<Power> {
    const SERVICE: &str = "org.freedesktop.UPower";
    let on_battery: bool = property(bus, SERVICE, "/org/freedesktop/UPower", SERVICE, "OnBattery").await?;
    if !on_battery {
        return Some(Power::External);
    }
    let display = "/org/freedesktop/UPower/devices/DisplayDevice";
    let percentage: Option<f64> = property(bus, SERVICE, display, "org.freedesktop.UPower.Device", "Percentage").await;
    let percent = percentage.filter(|p| *p > 0.0).map(|p| p.clamp(0.0, 100.0).round() as u8);
    Some(Power::Battery { percent })
}

/// `NMMetered`: 1 yes, 3 guess-yes count as metered (libnm's advice); 2 no,
/// 4 guess-no as unmetered; 0 unknown.
async fn network_manager(bus: &Connection) -> Option<Network> {
    const SERVICE: &str = "org.freedesktop.NetworkManager";
    let metered: u32 = property(bus, SERVICE, "/org/freedesktop/NetworkManager", SERVICE, "Metered").await?;
    match metered {
        1 | 3 => Some(Network::Metered { source: "NetworkManager" }),
        2 | 4 => Some(Network::Unmetered),
        _ => None,
    }
}

/// `NetworkManager`'s primary connection: its `Uuid` (the saved profile's,
/// the same on every reconnect) and `Id` (the profile's name, e.g. the
/// hotspot's), from the manager's `PrimaryConnection`.
pub async fn primary_connection() -> Option<(String, String)> {
    const SERVICE: &str = "org.freedesktop.NetworkManager";
    const ACTIVE: &str = "org.freedesktop.NetworkManager.Connection.Active";
    let bus = tokio::time::timeout(TIMEOUT, Connection::system()).await.ok()?.ok()?;
    let read = async {
        let path: zbus::zvariant::OwnedObjectPath =
            property(&bus, SERVICE, "/org/freedesktop/NetworkManager", SERVICE, "PrimaryConnection").await?;
        if path.as_str() == "/" {
            return None;
        }
        let uuid: String = property(&bus, SERVICE, path.as_str(), ACTIVE, "Uuid").await?;
        let id: String = property(&bus, SERVICE, path.as_str(), ACTIVE, "Id").await.unwrap_or_default();
        (!uuid.is_empty()).then_some((uuid, id))
    };
    tokio::time::timeout(TIMEOUT, read).await.ok().flatten()
}

/// A stream that yields whenever `UPower` or `NetworkManager` announce a
/// property change, so the daemon re-reads at once instead of waiting for
/// its next poll. `None` without a system bus.
pub async fn changes() -> Option<impl futures_util::Stream<Item = ()> + Unpin + Send> {
    use futures_util::StreamExt as _;
    let Ok(Ok(bus)) = tokio::time::timeout(TIMEOUT, Connection::system()).await else { return None };
    let mut streams = Vec::new();
    for sender in ["org.freedesktop.UPower", "org.freedesktop.NetworkManager"] {
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .sender(sender)
            .ok()?
            .interface("org.freedesktop.DBus.Properties")
            .ok()?
            .member("PropertiesChanged")
            .ok()?
            .build();
        streams.push(zbus::MessageStream::for_match_rule(rule, &bus, Some(16)).await.ok()?);
    }
    Some(futures_util::stream::select_all(streams).map(|_| ()))
}
