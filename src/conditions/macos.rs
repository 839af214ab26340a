//! macOS power: `pmset -g batt` reports the providing power source and the
//! internal battery's charge (the same facts as `IOKit`'s
//! `IOPSGetProvidingPowerSourceType`, without unsafe FFI in this crate).

use crate::policy::Power;

/// Power from `pmset -g batt` output, e.g.
/// `Now drawing from 'Battery Power'` / ` -InternalBattery-0 (id=…)\t41%; discharging; …`.
pub fn parse_pmset(output: &str) -> Power {
    if output.contains("'AC Power'") || output.contains("'UPS Power'") {
        return Power::External;
    }
    if !output.contains("'Battery Power'") {
        return Power::Unknown;
    }
    let percent = output
        .lines()
        .find(|l| l.contains("InternalBattery"))
        .and_then(|l| l.split('\t').nth(1))
        .and_then(|rest| rest.split('%').next())
        .and_then(|p| p.trim().parse::<u8>().ok());
    Power::Battery { percent }
}

/// Runs `pmset -g batt` (macOS only).
#[cfg(target_os = "macos")]
pub fn read_power() -> Power {
    match std::process::Command::new("/usr/bin/pmset").args(["-g", "batt"]).output() {
        Ok(out) if out.status.success() => parse_pmset(&String::from_utf8_lossy(&out.stdout)),
        _ => Power::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmset_output() {
        let battery = "Now drawing from 'Battery Power'\n -InternalBattery-0 (id=4653155)\t41%; discharging; 3:12 remaining present: true\n";
        let ac = "Now drawing from 'AC Power'\n -InternalBattery-0 (id=4653155)\t100%; charged; 0:00 remaining present: true\n";
        assert_eq!(parse_pmset(battery), Power::Battery { percent: Some(41) });
        assert_eq!(parse_pmset(ac), Power::External);
        assert_eq!(parse_pmset(""), Power::Unknown);
    }
}
