//! `photosync completions SHELL` prints the shell's completion script, and
//! `photosync man` (for packages) the manual page: both made from the
//! command-line definitions, so they never fall out of step with them. The
//! manual adds the exit codes and the configuration reference (the README's
//! commented examples).

use std::fmt::Write as _;
use std::io::Write as _;

use clap::CommandFactory as _;

use super::{Cli, EXIT_CODES, Exit};

/// Arguments of `photosync completions`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

/// Prints the completion script for `args.shell`.
pub fn completions(args: &Args) -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut Cli::command(), "photosync", &mut out);
    out.flush()?;
    Ok(Exit::Done)
}

/// Prints the manual page (roff, section 1).
pub fn man() -> anyhow::Result<Exit> {
    let mut out = std::io::stdout().lock();
    out.write_all(&page()?)?;
    out.flush()?;
    Ok(Exit::Done)
}

/// The manual page.
fn page() -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(Cli::command());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    page.extend_from_slice(commands().as_bytes());
    page.extend_from_slice(exit_status().as_bytes());
    page.extend_from_slice(FILES.as_bytes());
    page.extend_from_slice(configuration(include_str!("../../README.md")).as_bytes());
    man.render_version_section(&mut page)?;
    Ok(page)
}

const FILES: &str = r".SH FILES
.TP
\fI~/.config/photosync/config.toml\fR
The configuration (macOS: \fI~/Library/Application Support/photosync/config.toml\fR);
\fB\-\-config\fR or \fBPHOTOSYNC_CONFIG\fR name another.
.TP
\fI~/.local/share/photosync/catalog.sqlite\fR
The catalog: every file found, every upload job and its receipt (\fBstate_dir\fR moves it).
.TP
\fI$XDG_RUNTIME_DIR/photosync/photosync.sock\fR
The daemon's control socket.
";

/// The subcommands, each with what it does (`photosync COMMAND --help`
/// lists its options).
fn commands() -> String {
    let mut section =
        String::from(".SH COMMANDS\n\\fBphotosync\\fR \\fICOMMAND\\fR \\fB\\-\\-help\\fR lists a command's options.\n");
    for command in Cli::command().get_subcommands().filter(|c| !c.is_hide_set()) {
        let about = command.get_long_about().or(command.get_about()).map(ToString::to_string).unwrap_or_default();
        let _ = write!(section, ".TP\n\\fBphotosync {}\\fR\n{}\n", command.get_name(), escape(&about));
    }
    section
}

/// [`EXIT_CODES`] as a roff section: a tagged paragraph per code, its
/// continuation lines joined.
fn exit_status() -> String {
    let mut section = String::from(".SH \"EXIT STATUS\"\n");
    for line in EXIT_CODES.lines().skip(1) {
        let line = line.trim();
        match line.split_once(char::is_whitespace) {
            Some((code, meaning)) if code.bytes().all(|b| b.is_ascii_digit()) => {
                let _ = write!(section, ".TP\n\\fB{code}\\fR\n{}\n", escape(meaning.trim()));
            }
            _ => {
                section.push_str(&escape(line));
                section.push('\n');
            }
        }
    }
    section
}

/// The configuration reference: the commented TOML examples of the
/// README's "Configuration" section, under their headings.
fn configuration(readme: &str) -> String {
    let mut section = String::from(
        ".SH CONFIGURATION\nA TOML file. What follows are the README's commented examples, \
         one per part; the README explains each in full.\n",
    );
    let start = readme.find("\n## Configuration").unwrap_or(readme.len());
    let part = &readme[start..];
    let end = part[1..].find("\n## ").map_or(part.len(), |i| i + 1);
    // A heading is written with the first example under it.
    let (mut heading, mut fence): (Option<&str>, Option<bool>) = (None, None);
    for line in part[..end].lines() {
        match fence {
            Some(toml) if line.starts_with("```") => {
                if toml {
                    section.push_str(".fi\n");
                }
                fence = None;
            }
            Some(true) => {
                section.push_str(&escape(line));
                section.push('\n');
            }
            Some(false) => {}
            None if line.starts_with("```") => {
                let toml = line.starts_with("```toml");
                if toml && let Some(title) = heading.take() {
                    let _ = writeln!(section, ".SS \"{}\"", escape(&title.replace('`', "")).replace('"', ""));
                }
                if toml {
                    section.push_str(".PP\n.nf\n");
                }
                fence = Some(toml);
            }
            None => {
                if let Some(title) = line.strip_prefix("### ") {
                    heading = Some(title);
                }
            }
        }
    }
    section
}

/// `text` safe in roff: backslashes escaped, hyphens kept as hyphens, and
/// no line starting with a control character.
fn escape(text: &str) -> String {
    let lines = text.lines().map(|line| {
        let escaped = line.replace('\\', "\\e").replace('-', "\\-");
        if escaped.starts_with('.') || escaped.starts_with('\'') { format!("\\&{escaped}") } else { escaped }
    });
    lines.collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The manual names every subcommand, every exit code, and the
    /// configuration of every destination type.
    #[test]
    fn the_manual_has_commands_exit_codes_and_configuration() {
        let page = String::from_utf8(page().expect("render")).expect("utf-8");
        for command in Cli::command().get_subcommands().filter(|c| !c.is_hide_set()) {
            assert!(page.contains(&format!("\\fBphotosync {}\\fR", command.get_name())), "{}", command.get_name());
        }
        for code in ["0", "1", "2", "3", "75", "130"] {
            assert!(page.contains(&format!(".TP\n\\fB{code}\\fR\n")), "exit code {code}");
        }
        for kind in photosync::destination::registry::TYPES {
            assert!(page.contains(&format!("type = \"{kind}\"")), "{kind}");
        }
        assert!(!page.contains("```"), "no markdown fences left");
        assert!(!page.lines().any(|l| l.starts_with('\'')), "no line starts with a control character");
        assert!(!page.contains(".SS \"Where photos go: layout\"\n.SS"), "no heading without its example");
    }
}
