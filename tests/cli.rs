//! Commands and configuration: init, config errors, jobs listing, retry,
//! and the lock that keeps two runs apart.

use std::fs;

use serde_json::Value;

use crate::harness::{Env, make_library, stderr, stdout, tree, write_photo};

#[test]
fn init_then_backup_is_the_whole_setup() {
    let env = Env::new();
    fs::remove_file(&env.config).expect("rm config");
    let media = make_library(&env.source, 3, 2_000);
    let new_dest = env.dir.path().join("new-dest");
    // The catalog inside the test directory, uploads whatever the power.
    let out = env.run(["init", "--source"].iter().map(std::string::ToString::to_string).chain([
        env.source.display().to_string(),
        "--destination".into(),
        new_dest.display().to_string(),
        "--state-dir".into(),
        env.state.display().to_string(),
        "--on-battery".into(),
        "allow".into(),
    ]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(new_dest.is_dir(), "init creates the destination");
    let text = fs::read_to_string(&env.config).expect("config written");
    assert!(text.contains("# max_concurrent"), "starter config is commented");
    assert!(text.lines().any(|l| l == "on_battery = \"allow\""), "{text}");
    let (code, summary) = env.backup();
    assert_eq!(code, 0, "{summary}");
    assert_eq!(tree(&new_dest).len(), media.len());
    assert!(env.state.join("catalog.sqlite").is_file(), "the catalog is in --state-dir");
}

/// `init` says what it decided: on a machine with a battery, uploads hold
/// on battery (and how to change that); without one, they run whatever the
/// power; `--on-battery` decides instead; the destination it made; the next
/// command.
#[test]
fn init_tells_the_power_policy_it_wrote() {
    let env = Env::new();
    let laptop = env.dir.path().join("laptop-power");
    fs::create_dir_all(laptop.join("BAT0")).expect("battery");
    fs::write(laptop.join("BAT0/type"), "Battery\n").expect("type");
    let desktop = env.dir.path().join("desktop-power");
    fs::create_dir_all(desktop.join("AC")).expect("mains");
    fs::write(desktop.join("AC/type"), "Mains\n").expect("type");
    for (power, asked, written, said) in [
        (&laptop, None, "on_battery = \"hold\"", "this machine has a battery"),
        (&desktop, None, "on_battery = \"allow\"", "no battery here"),
        (&laptop, Some("allow"), "on_battery = \"allow\"", "uploads run on battery too (as asked)"),
        (&desktop, Some("hold"), "on_battery = \"hold\"", "uploads wait while the machine runs on battery (as asked)"),
    ] {
        let dest =
            env.dir.path().join(format!("dest-{}-{}", power.file_name().expect("name").display(), asked.is_some()));
        let mut args = vec!["init".to_owned(), "--force".into(), "--source".into(), env.source.display().to_string()];
        args.extend(["--destination".into(), dest.display().to_string()]);
        args.extend(["--power-supply-dir".into(), power.display().to_string()]);
        args.extend(asked.map(|rule| ["--on-battery".to_owned(), rule.to_owned()]).into_iter().flatten());
        let out = env.run(args);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = fs::read_to_string(&env.config).expect("config");
        assert!(text.lines().any(|l| l == written), "{text}");
        let told = stdout(&out);
        assert!(
            told.contains(said) && told.contains("a folder, created") && told.contains("Next: photosync --config "),
            "{told}"
        );
    }
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let env = Env::new();
    let before = fs::read_to_string(&env.config).expect("config");
    let args = |force: bool| {
        let mut a = vec!["init".to_owned(), "--source".into(), env.source.display().to_string()];
        a.extend(["--destination".into(), env.dest.display().to_string()]);
        if force {
            a.push("--force".into());
        }
        a
    };
    let out = env.run(args(false));
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(fs::read_to_string(&env.config).expect("config"), before);
    assert!(env.run(args(true)).status.success());
    assert_ne!(fs::read_to_string(&env.config).expect("config"), before);
}

/// A catalog inside the photos would wake the watcher at each of its own
/// writes; inside the backup folder it would sit among the copies.
#[test]
fn init_refuses_a_catalog_inside_the_source_or_destination() {
    let env = Env::new();
    let before = fs::read_to_string(&env.config).expect("config");
    for (inside, named) in [(&env.source, "inside the source"), (&env.dest, "inside the destination")] {
        let mut args = vec!["init".to_owned(), "--force".into(), "--source".into(), env.source.display().to_string()];
        args.extend(["--destination".into(), env.dest.display().to_string()]);
        args.extend(["--state-dir".into(), inside.join("catalog").display().to_string()]);
        let out = env.run(args);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains(named), "{}", stderr(&out));
        assert_eq!(fs::read_to_string(&env.config).expect("config"), before, "nothing written");
    }
}

#[test]
fn corrupt_config_exits_2_naming_the_key() {
    let env = Env::new();
    let original = fs::read_to_string(&env.config).expect("config");
    let cases = [
        (format!("{original}\nmax_concurent = 4\n"), "max_concurent"),
        (original.replace("[retry]", "max_concurrent = \"lots\"\n[retry]"), "max_concurrent"),
        (original.replace("run_delay = \"20ms\"", "run_delay = \"soonish\""), "retry.run_delay"),
        (original.replace("type = \"folder\"", "type = \"floppy\""), "destination[0].type"),
        ("[[source]\npath = 1".to_owned(), "source"),
    ];
    for (text, key) in cases {
        fs::write(&env.config, &text).expect("write");
        let out = env.run(["backup"]);
        assert_eq!(out.status.code(), Some(2), "{key}: {}", stderr(&out));
        assert!(stderr(&out).contains(key), "error should name `{key}`: {}", stderr(&out));
    }
    fs::remove_file(&env.config).expect("rm");
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("photosync init"), "{}", stderr(&out));
}

#[test]
fn jobs_lists_states_as_a_table_and_as_json() {
    let env = Env::new();
    let out = env.run(["jobs"]);
    assert!(out.status.success(), "no catalog yet is not an error: {}", stderr(&out));
    make_library(&env.source, 4, 1_000);
    assert_eq!(env.backup().0, 0);
    let out = env.run(["jobs", "--state", "acknowledged", "--json"]);
    assert!(out.status.success());
    let jobs: Value = serde_json::from_slice(&out.stdout).expect("json");
    let jobs = jobs.as_array().expect("array");
    assert_eq!(jobs.len(), 5);
    for job in jobs {
        assert_eq!(job["state"], "acknowledged");
        assert_eq!(job["destination"], "backup");
        assert!(job["receipt_key"].as_str().is_some_and(|k| !k.is_empty()), "{job}");
    }
    let table = stdout(&env.run(["jobs"]));
    assert!(table.starts_with("    ID  STATE"), "{table}");
    assert_eq!(table.lines().count(), 6, "{table}");
    let out = env.run(["jobs", "--state", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_second_run_while_one_holds_the_catalog_exits_75() {
    let env = Env::new();
    write_photo(&env.source.join("a.jpg"), 1_000, 1);
    fs::create_dir_all(&env.state).expect("state");
    let lock = fs::File::create(env.state.join("photosync.lock")).expect("lock file");
    lock.try_lock().expect("take the lock as another run would");
    let out = env.run(["backup"]);
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(stderr(&out).contains("another photosync process"), "{}", stderr(&out));
    drop(lock);
    assert_eq!(env.backup().0, 0);
}

#[test]
fn help_documents_the_exit_codes() {
    let env = Env::new();
    let help = stdout(&env.run(["--help"]));
    for code in ["0 ", "1 ", "2 ", "75 ", "130 "] {
        assert!(help.contains(&format!("  {code}")), "{code} missing from --help:\n{help}");
    }
}

/// Regression: `photosync jobs` printed a file name's newline and ESC
/// sequence as they were, so a name could rewrite the user's terminal.
#[test]
fn file_names_are_escaped_on_the_terminal() {
    let env = Env::new();
    let hostile = "evil\n\u{1b}[2J\u{1b}]0;owned\u{7}.jpg";
    write_photo(&env.source.join(hostile), 2_000, 1);
    fs::remove_dir(&env.dest).expect("keep the job queued");
    assert_eq!(env.backup().0, 75);
    for args in [&["jobs"][..], &["backup"]] {
        let out = env.run(args);
        let text = stdout(&out);
        assert!(!text.contains('\u{1b}') && !text.contains('\u{7}'), "raw control characters: {text:?}");
        assert!(!text.contains("evil\n"), "{text:?}");
        if args == ["jobs"] {
            assert!(text.contains("evil\\n\\u{1b}[2J"), "{text:?}");
        }
    }
    let json = env.run(["jobs", "--json"]);
    let jobs: Value = serde_json::from_slice(&json.stdout).expect("json");
    assert!(jobs[0]["path"].as_str().is_some_and(|p| p.ends_with(hostile)), "JSON keeps the name exact");
}

/// `photosync completions bash`, sourced into bash, completes a subcommand
/// (with no config to be found: completions need none).
#[test]
fn bash_completion_completes_a_subcommand() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["completions", "bash"])
        .env("HOME", dir.path().join("no-home"))
        .env_remove("PHOTOSYNC_CONFIG")
        .output()
        .expect("run photosync");
    assert!(out.status.success(), "{}", stderr(&out));
    let script = dir.path().join("photosync.bash");
    fs::write(&script, &out.stdout).expect("write script");
    // The words typed so far, the last one being completed.
    let complete = |words: &[&str]| -> Vec<String> {
        let probe = r#"source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"
            COMP_POINT=${#COMP_LINE}
            _photosync photosync "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
            printf '%s\n' "${COMPREPLY[@]}""#;
        let out = std::process::Command::new("bash")
            .args(["-c", probe, "bash"])
            .arg(&script)
            .args(words)
            .output()
            .expect("this test needs bash");
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().map(str::to_owned).collect()
    };
    assert_eq!(complete(&["photosync", "sta"]), ["status"]);
    assert_eq!(complete(&["photosync", "pa"]), ["pause", "password"]);
    assert!(complete(&["photosync", "status", "--"]).contains(&"--json".to_owned()));
}
