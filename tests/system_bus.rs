//! A private D-Bus bus standing in for the system bus, with
//! python-dbusmock's `UPower`, `NetworkManager` and logind on it, and a
//! daemon that watches it.

use std::time::Duration;

use crate::conditions::with_policy;
use crate::harness::{Env, wait_until};

/// logind's `InhibitDelayMaxUSec` for a daemon on the bus: long, so that an
/// inhibitor released well within it was released by the uploads stopping.
pub(crate) const SLEEP_DELAY: Duration = Duration::from_secs(20);

/// A private D-Bus bus standing in for the system bus, with python-dbusmock
/// serving `UPower`, `NetworkManager` and logind on it (logind's template
/// hands out real inhibitor fds and lists them until they are closed).
pub(crate) struct SystemBus {
    pub(crate) address: String,
    children: Vec<std::process::Child>,
}

const PYTHON: &str = "/usr/bin/python3";

impl SystemBus {
    /// Starts the bus and the mocks; fails, saying what is missing, where
    /// dbus-daemon or python3-dbusmock is not installed.
    pub(crate) fn start() -> SystemBus {
        let has_mock = std::process::Command::new(PYTHON)
            .args(["-c", "import dbusmock"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            has_mock,
            "this test needs python3-dbusmock (Debian: apt-get install python3-dbusmock; .ci/run installs it)"
        );
        assert!(
            std::process::Command::new("dbus-daemon").arg("--version").output().is_ok(),
            "this test needs dbus-daemon (Debian: apt-get install dbus; .ci/run installs it)"
        );
        let mut daemon = std::process::Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("dbus-daemon");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(daemon.stdout.take().expect("stdout")), &mut line)
            .expect("bus address");
        let mut bus = SystemBus { address: line.trim().to_owned(), children: vec![daemon] };
        for (template, parameters) in [("upower", r#"{"OnBattery": true}"#), ("networkmanager", "{}"), ("logind", "{}")]
        {
            let mock = std::process::Command::new(PYTHON)
                .args(["-m", "dbusmock", "--system", "--template", template, "-p", parameters])
                .env("DBUS_SYSTEM_BUS_ADDRESS", &bus.address)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("dbusmock");
            bus.children.push(mock);
        }
        wait_until(Duration::from_secs(20), "the mocks answer", || {
            bus.run("nm.GetAll(NM, dbus_interface=PROPS)\nlogind.ListInhibitors(dbus_interface=LOGIN)").status.success()
        });
        bus
    }

    /// Runs a Python statement with `bus`, `upower`, `nm` and a few names bound.
    pub(crate) fn call(&self, statement: &str) -> bool {
        let out = self.run(statement);
        if !out.status.success() {
            eprintln!("python3 failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    }

    fn run(&self, statement: &str) -> std::process::Output {
        let program = format!(
            "import dbus\nbus = dbus.bus.BusConnection({:?})\nMOCK = 'org.freedesktop.DBus.Mock'\n\
             PROPS = 'org.freedesktop.DBus.Properties'\nNM = 'org.freedesktop.NetworkManager'\n\
             upower = bus.get_object('org.freedesktop.UPower', '/org/freedesktop/UPower')\n\
             nm = bus.get_object(NM, '/org/freedesktop/NetworkManager')\n\
             LOGIN = 'org.freedesktop.login1.Manager'\n\
             logind = bus.get_object('org.freedesktop.login1', '/org/freedesktop/login1')\n{statement}\n",
            self.address
        );
        std::process::Command::new(PYTHON).args(["-c", &program]).output().expect("python3")
    }

    /// The sleep inhibitors logind holds, as `what/who/mode`.
    pub(crate) fn inhibitors(&self) -> Vec<String> {
        let program = format!(
            "import dbus\nbus = dbus.bus.BusConnection({:?})\n\
             logind = bus.get_object('org.freedesktop.login1', '/org/freedesktop/login1')\n\
             for i in logind.ListInhibitors(dbus_interface='org.freedesktop.login1.Manager'):\n    \
             print(f'{{i[0]}}/{{i[1]}}/{{i[3]}}')\n",
            self.address
        );
        let out = std::process::Command::new(PYTHON).args(["-c", &program]).output().expect("python");
        assert!(out.status.success(), "ListInhibitors: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }

    /// Has logind announce a sleep (`true`) or a wake (`false`).
    pub(crate) fn prepare_for_sleep(&self, starting: bool) {
        let value = if starting { "True" } else { "False" };
        let done = self.call(&format!(
            "logind.EmitSignal(LOGIN, 'PrepareForSleep', 'b', [dbus.Boolean({value})], dbus_interface=MOCK)"
        ));
        assert!(done, "emit PrepareForSleep");
    }

    /// Sets logind's `InhibitDelayMaxUSec` (the template has none: the
    /// property is added the first time).
    pub(crate) fn set_sleep_delay(&self, delay: Duration) {
        let micros = delay.as_micros();
        let done = self.call(&format!(
            "try:\n    logind.UpdateProperties(LOGIN, {{'InhibitDelayMaxUSec': dbus.UInt64({micros})}}, dbus_interface=MOCK)\n\
             except dbus.exceptions.DBusException:\n    \
             logind.AddProperty(LOGIN, 'InhibitDelayMaxUSec', dbus.UInt64({micros}), dbus_interface=MOCK)"
        ));
        assert!(done, "set InhibitDelayMaxUSec");
    }

    /// Makes a connection profile `uuid` named `id` the primary connection,
    /// as `NetworkManager` publishes it (an active connection object with
    /// `Uuid` and `Id`, named by the manager's `PrimaryConnection`; the
    /// template's `SetProperty`, since `UpdateProperties` cannot announce an
    /// object path).
    pub(crate) fn set_primary_connection(&self, uuid: &str, id: &str) {
        let name: String = uuid.chars().filter(char::is_ascii_alphanumeric).collect();
        let done = self.call(&format!(
            "path = dbus.ObjectPath('/org/freedesktop/NetworkManager/ActiveConnection/{name}')\n\
             try:\n    nm.AddObject(path, 'org.freedesktop.NetworkManager.Connection.Active', \
             {{'Uuid': {uuid:?}, 'Id': {id:?}}}, [], dbus_interface=MOCK)\n\
             except dbus.exceptions.DBusException:\n    pass\n\
             try:\n    nm.AddProperty(NM, 'PrimaryConnection', path, dbus_interface=MOCK)\n\
             except dbus.exceptions.DBusException:\n    \
             nm.SetProperty('/org/freedesktop/NetworkManager', NM, 'PrimaryConnection', path, dbus_interface=MOCK)"
        ));
        assert!(done, "set PrimaryConnection");
    }

    pub(crate) fn set_on_battery(&self, on_battery: bool) {
        let value = if on_battery { "True" } else { "False" };
        let done = self.call(&format!(
            "upower.UpdateProperties('org.freedesktop.UPower', {{'OnBattery': {value}}}, dbus_interface=MOCK)"
        ));
        assert!(done, "set OnBattery");
    }

    pub(crate) fn set_metered(&self, metered: u32) {
        let done = self.call(&format!(
            "try:\n    nm.UpdateProperties(NM, {{'Metered': dbus.UInt32({metered})}}, dbus_interface=MOCK)\n\
             except dbus.exceptions.DBusException:\n    nm.AddProperty(NM, 'Metered', dbus.UInt32({metered}), dbus_interface=MOCK)"
        ));
        assert!(done, "set Metered");
    }
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A daemon on `bus` (mains power, logind allowing 20 s of delay before a
/// sleep), its uploads slowed to 2 MiB/s so one can be caught mid-way. The
/// poll interval is long: only the bus's signals can make it react in time.
pub(crate) fn daemon_on_the_bus(bus: &SystemBus) -> (Env, crate::harness::TestDaemon) {
    daemon_on_the_bus_with(bus, "")
}

/// [`daemon_on_the_bus`] with more `[policy]` settings.
pub(crate) fn daemon_on_the_bus_with(bus: &SystemBus, policy: &str) -> (Env, crate::harness::TestDaemon) {
    let env = Env::new();
    env.write_config("settle = \"100ms\"");
    with_policy(&env, &format!("poll_interval = \"1h\"\nhysteresis = \"1s\"\nbandwidth = \"2MiB\"\n{policy}"));
    env.use_system_bus(&bus.address);
    bus.set_on_battery(false);
    bus.set_sleep_delay(SLEEP_DELAY);
    let daemon = env.start_daemon();
    (env, daemon)
}

/// Drops a 12 MiB video into the source and waits until its upload is under way.
pub(crate) fn upload_under_way(env: &Env, seed: u64) {
    crate::harness::write_video(&env.source.join("clip.mp4"), 12 * 1024 * 1024, seed);
    wait_until(Duration::from_secs(30), "the upload is under way", || {
        env.status()["scheduler"]["uploads"][0]["bytes_done"].as_u64().is_some_and(|b| b > 0)
    });
}

pub(crate) fn job_state(env: &Env) -> (String, String, i64) {
    env.catalog()
        .query_row("SELECT state, COALESCE(waiting_on, ''), attempts FROM jobs", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .expect("job")
}
