//! `photosync auth NAME`: sign in to the cloud service of a destination
//! (Dropbox: allow the app in a browser, paste the code it shows), see
//! where the sign-in is kept and whether it still works (`--status`), or
//! remove it (`--forget`). Tokens are never printed.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::Context as _;

use super::output::printable;
use super::{Exit, UsageError};
use photosync::config::Config;
use photosync::ipc::protocol::{Request, Response};
use photosync::oauth::SignIn;
use photosync::oauth::pkce::Pkce;
use photosync::oauth::signin::Flow;

/// Arguments of `photosync auth`.
#[derive(Debug, clap::Args)]
#[allow(clippy::struct_excessive_bools)] // command-line switches
pub struct Args {
    /// The destination's `name` in the config.
    name: String,
    /// Say where the sign-in is kept and whether the service still takes
    /// it (exit 0: it works; 1: not signed in, or revoked; 75: the service
    /// could not be reached).
    #[arg(long, conflicts_with = "forget")]
    status: bool,
    /// Remove the sign-in from this machine.
    #[arg(long)]
    forget: bool,
    /// With --status: as JSON, for scripts.
    #[arg(long, requires = "status")]
    json: bool,
    /// Sign in by entering a short code on the service's page, on any
    /// device (OneDrive; its default).
    #[arg(long, conflicts_with_all = ["browser", "status", "forget"])]
    device: bool,
    /// Sign in with a browser on this machine, which sends the answer back
    /// to photosync on 127.0.0.1 (OneDrive).
    #[arg(long, conflicts_with_all = ["status", "forget"])]
    browser: bool,
}

pub fn run(config: &Config, args: &Args) -> anyhow::Result<Exit> {
    let sign_in = sign_in_of(config, &args.name)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    let name = printable(&args.name);
    let service = sign_in.provider.service;
    if args.forget {
        let store = sign_in.store.clone();
        if store.forget().map_err(anyhow::Error::msg)? {
            println!("Removed the {service} sign-in of {name} from this machine.");
            println!("To revoke it at {service} too, remove the app from your account's connected apps.");
        } else {
            println!("No {service} sign-in of {name} is kept on this machine.");
        }
        return Ok(Exit::Done);
    }
    if args.status {
        let status = runtime.block_on(sign_in.status());
        if args.json {
            println!("{}", serde_json::to_string_pretty(&status)?);
        } else {
            print_status(&status, &sign_in);
        }
        return Ok(match status.grant {
            "works" => Exit::Done,
            "unreachable" => Exit::Deferred,
            _ => Exit::Failed,
        });
    }
    let flow = match (args.device, args.browser) {
        (true, _) => Flow::Device,
        (_, true) => Flow::Browser,
        _ => sign_in.default_flow,
    };
    if !sign_in.offers(flow) {
        return Err(UsageError(format!("{service} does not offer the {} sign-in", flow.name())).into());
    }
    println!("To let photosync upload to {service} as {name}:");
    println!();
    let (grant, place) = match flow {
        Flow::Paste => {
            let pkce = Pkce::new().context("cannot draw a random sign-in secret")?;
            println!("1. Open this address in a browser, sign in to {service}, and allow the app:");
            println!();
            println!("   {}", sign_in.authorize_url(&pkce));
            println!();
            print!("2. Paste the code {service} shows: ");
            std::io::stdout().flush().ok();
            let mut code = String::new();
            std::io::stdin().lock().read_line(&mut code).context("cannot read the code from standard input")?;
            let code = code.trim();
            if code.is_empty() {
                return Err(UsageError("no code was pasted; nothing changed".into()).into());
            }
            runtime.block_on(sign_in.finish_paste(code, &pkce))
        }
        Flow::Device => runtime.block_on(async {
            let code = sign_in.device_start().await?;
            println!(
                "Open {} on any device, sign in to {service}, and enter the code {}",
                printable(&code.verification_uri),
                printable(&code.user_code)
            );
            println!();
            println!("Waiting for the sign-in…");
            std::io::stdout().flush().ok();
            sign_in.device_finish(code).await
        }),
        Flow::Browser => runtime.block_on(async {
            let browser = sign_in.browser_start().await?;
            println!("Open this address in a browser on this machine, sign in to {service}, and allow the app:");
            println!();
            println!("   {}", browser.url);
            println!();
            println!(
                "photosync waits for the browser on port {port}. Without a browser here, run \
                 `ssh -L {port}:localhost:{port} THIS-MACHINE` on a computer that has one, and open the address there.",
                port = browser.port
            );
            std::io::stdout().flush().ok();
            if std::io::stdout().is_terminal() {
                open_browser(browser.url.as_str());
            }
            sign_in.browser_finish(browser).await
        }),
    }
    .map_err(anyhow::Error::msg)?;
    println!();
    let account = grant.account.as_deref().map(|a| format!(" (account {})", printable(a))).unwrap_or_default();
    println!("Signed in to {service}{account}. The sign-in is kept in {}.", printable(&place.to_string()));
    // A running daemon holding this destination for the sign-in carries on now.
    let told = super::control::ask(config, &Request::SignedIn { destination: args.name.clone() });
    if matches!(told, Ok(Some(Response::Done))) {
        println!("The running daemon carries on with it now.");
    }
    println!("`photosync auth {name} --status` checks it.");
    Ok(Exit::Done)
}

fn print_status(status: &photosync::oauth::signin::Status, sign_in: &SignIn) {
    let name = printable(&status.destination);
    if !status.signed_in {
        if let Some(problem) = &status.problem {
            println!("{name}: cannot read the sign-in: {}", printable(problem));
        } else {
            let command = sign_in.provider.sign_in_command();
            println!("{name}: not signed in to {}; run `{command}`", status.service);
        }
        return;
    }
    println!("{name}: signed in to {}", status.service);
    let store = status.store.unwrap_or("?");
    println!("  kept in:       {store} ({})", printable(status.location.as_deref().unwrap_or("?")));
    if let Some(account) = &status.account {
        println!("  account:       {}", printable(account));
    }
    if let Some(scope) = &status.scope {
        println!("  permissions:   {}", printable(scope));
    }
    if let Some(at) = &status.signed_in_at {
        println!("  signed in at:  {}", printable(at));
    }
    if let Some(at) = &status.rotated_at {
        println!("  renewed at:    {}", printable(at));
    }
    match (status.grant, &status.problem) {
        ("works", _) => println!("  {} takes it: uploads can run", status.service),
        (_, Some(problem)) => println!("  {}", printable(problem)),
        _ => {}
    }
}

/// Opens `url` in the desktop's browser, if there is one (quietly: the
/// address is printed anyway).
fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") { "open" } else { "xdg-open" };
    let _ = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// How the destination called `name` signs in.
fn sign_in_of(config: &Config, name: &str) -> anyhow::Result<SignIn> {
    let destination = config.destinations.iter().find(|d| d.name == name).ok_or_else(|| {
        let names: Vec<String> = config.destinations.iter().map(|d| printable(&d.name).into_owned()).collect();
        UsageError(format!("no destination is called {}; the config has: {}", printable(name), names.join(", ")))
    })?;
    destination.kind.sign_in().ok_or_else(|| {
        UsageError(format!(
            "destination {} (type \"{}\") needs no sign-in; `photosync auth` is for dropbox, onedrive and googlephotos destinations",
            printable(name),
            destination.kind.type_name()
        ))
        .into()
    })
}
