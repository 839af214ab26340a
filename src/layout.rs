//! Where a photo goes at a destination: a key template such as
//! `{year}/{month}/{filename}`, checked once when the config is read and
//! rendered for each upload. No I/O.
//!
//! Date variables render the capture's wall-clock time, zero-padded;
//! `{camera}` and `{source}` are made safe for one path segment; empty
//! segments collapse, so a photo at the source's top has no `{dir}`. What
//! the rendered key may still hold (`..`, control characters, bytes that
//! are not UTF-8) each destination escapes as it always has.

use std::fmt;

use crate::model::{AssetInfo, RemoteKey};

/// The layout a destination has unless it names one: the source's folders.
pub const DEFAULT: &str = "{dir}/{filename}";

/// One variable of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    FileName,
    Stem,
    Ext,
    Dir,
    Source,
    Camera,
    Kind,
}

const VARS: &[(&str, Var)] = &[
    ("year", Var::Year),
    ("month", Var::Month),
    ("day", Var::Day),
    ("hour", Var::Hour),
    ("minute", Var::Minute),
    ("second", Var::Second),
    ("filename", Var::FileName),
    ("stem", Var::Stem),
    ("ext", Var::Ext),
    ("dir", Var::Dir),
    ("source", Var::Source),
    ("camera", Var::Camera),
    ("kind", Var::Kind),
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A checked key template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    text: String,
    parts: Vec<Part>,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct LayoutError(String);

/// What a key is rendered from.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The file's path below its source, as bytes.
    pub rel_path: &'a [u8],
    /// The source's name.
    pub source: &'a str,
    /// What the file is and when it was taken (`None`: not read yet;
    /// date, camera and kind variables then render as `unknown`).
    pub info: Option<&'a AssetInfo>,
}

impl Default for Layout {
    fn default() -> Self {
        Self::parse(DEFAULT).expect("the default layout is valid")
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Layout {
    /// Checks a template: every `{…}` must be a known variable, and the
    /// file must be named (by `{filename}`, or `{stem}`).
    pub fn parse(text: &str) -> Result<Layout, LayoutError> {
        let layout = Self::label(text)?;
        if !layout.parts.iter().any(|p| matches!(p, Part::Var(Var::FileName | Var::Stem))) {
            return Err(LayoutError("does not name the file: end it with `{filename}`".to_owned()));
        }
        Ok(layout)
    }

    /// Checks a template for a name that is not a file's (an album's, say
    /// `{year}` or `{source} {year}`): the file need not be named.
    pub fn label(text: &str) -> Result<Layout, LayoutError> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(LayoutError(format!("`}}` without `{{` at byte {}", text.len() - rest.len() + open)));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| LayoutError(format!("`{{{after}` is not closed")))?;
            let name = &after[..close];
            let var = VARS.iter().find(|(known, _)| *known == name).map(|(_, var)| *var).ok_or_else(|| {
                let known: Vec<String> = VARS.iter().map(|(k, _)| format!("{{{k}}}")).collect();
                LayoutError(format!("unknown variable `{{{name}}}`; known: {}", known.join(" ")))
            })?;
            parts.push(Part::Var(var));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        if let Some(dots) = text.split('/').find(|segment| matches!(*segment, "." | "..")) {
            return Err(LayoutError(format!("a `{dots}` folder would lead out of the destination")));
        }
        Ok(Layout { text: text.to_owned(), parts })
    }

    /// Whether rendering needs to know when the file was taken, by what and
    /// what it is.
    pub fn needs_info(&self) -> bool {
        self.parts.iter().any(|p| {
            matches!(
                p,
                Part::Var(
                    Var::Year | Var::Month | Var::Day | Var::Hour | Var::Minute | Var::Second | Var::Camera | Var::Kind
                )
            )
        })
    }

    /// The key of `subject` in this layout.
    pub fn render(&self, subject: &Subject<'_>) -> RemoteKey {
        let rel = subject.rel_path;
        let name_start = rel.iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        let (dir, file_name) = (&rel[..name_start.saturating_sub(1)], &rel[name_start..]);
        let dot = file_name.iter().rposition(|&b| b == b'.').filter(|&i| i > 0);
        let (stem, ext) = match dot {
            Some(i) => (&file_name[..i], &file_name[i + 1..]),
            None => (file_name, &b""[..]),
        };
        // A member of a group takes its key's stem.
        let stem = subject.info.and_then(|i| i.group.as_ref()).map_or(stem, |g| g.stem.as_bytes());
        let mut key = Vec::with_capacity(rel.len() + 16);
        for part in &self.parts {
            match part {
                Part::Text(text) => key.extend_from_slice(text.as_bytes()),
                Part::Var(Var::FileName) => key.extend_from_slice(file_name),
                Part::Var(Var::Stem) => key.extend_from_slice(stem),
                Part::Var(Var::Ext) => key.extend_from_slice(ext),
                Part::Var(Var::Dir) => key.extend_from_slice(dir),
                Part::Var(Var::Source) => key.extend_from_slice(segment(subject.source).as_bytes()),
                Part::Var(var) => key.extend_from_slice(described(*var, subject.info).as_bytes()),
            }
        }
        // Empty segments collapse: `{dir}` of a file at the top, `a//b`.
        let segments: Vec<&[u8]> = key.split(|&b| b == b'/').filter(|s| !s.is_empty()).collect();
        RemoteKey(segments.join(&b'/'))
    }
}

/// A variable read from the asset's metadata.
fn described(var: Var, info: Option<&AssetInfo>) -> String {
    let Some(info) = info else { return "unknown".to_owned() };
    let t = info.capture.local;
    match var {
        Var::Year => format!("{:04}", t.year()),
        Var::Month => format!("{:02}", t.month()),
        Var::Day => format!("{:02}", t.day()),
        Var::Hour => format!("{:02}", t.hour()),
        Var::Minute => format!("{:02}", t.minute()),
        Var::Second => format!("{:02}", t.second()),
        Var::Camera => info.camera.as_deref().map_or_else(|| "unknown".to_owned(), segment),
        Var::Kind => info.kind.as_str().to_owned(),
        Var::FileName | Var::Stem | Var::Ext | Var::Dir | Var::Source => String::new(),
    }
}

/// Longest a `{camera}` or `{source}` folder name gets, in bytes (file
/// systems take 255, and the photo's own name needs room beside it).
const MAX_SEGMENT: usize = 100;

/// `text` as one path segment: separators and control characters become
/// `_`, runs of spaces one space, at most [`MAX_SEGMENT`] bytes, and nothing
/// is left empty or dot-only.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_SEGMENT));
    for c in text.trim().chars() {
        if out.len() + c.len_utf8() > MAX_SEGMENT {
            break;
        }
        let c = if c == '/' || c == '\\' || c.is_control() { '_' } else { c };
        if !(c == ' ' && out.ends_with(' ')) {
            out.push(c);
        }
    }
    let out = out.trim_end();
    if out.chars().all(|c| c == '.') { "unknown".to_owned() } else { out.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Capture, CaptureSource, MediaKind};

    fn info(camera: Option<&str>) -> AssetInfo {
        AssetInfo {
            kind: MediaKind::Video,
            capture: Capture {
                local: jiff::civil::date(2019, 6, 5).at(7, 8, 9, 0),
                offset: None,
                source: CaptureSource::QuickTime,
            },
            camera: camera.map(str::to_owned),
            group: None,
        }
    }

    fn render(template: &str, rel: &str, info: Option<&AssetInfo>) -> String {
        let subject = Subject { rel_path: rel.as_bytes(), source: "Phone / Pixel", info };
        Layout::parse(template).expect("valid").render(&subject).to_string()
    }

    #[test]
    fn templates_render_dates_names_and_folders() {
        let i = info(Some("Apple iPhone 15/Pro"));
        let table = [
            (DEFAULT, "DCIM/100APPLE/IMG_1.MOV", "DCIM/100APPLE/IMG_1.MOV"),
            (DEFAULT, "IMG_1.MOV", "IMG_1.MOV"),
            ("{year}/{month}/{filename}", "DCIM/IMG_1.MOV", "2019/06/IMG_1.MOV"),
            ("{year}-{month}-{day} {hour}.{minute}.{second}/{stem}.{ext}", "a.b.mov", "2019-06-05 07.08.09/a.b.mov"),
            ("{source}/{camera}/{kind}/{filename}", "x/IMG_1.MOV", "Phone _ Pixel/Apple iPhone 15_Pro/video/IMG_1.MOV"),
            ("/{year}//{dir}/{filename}", "IMG_1.MOV", "2019/IMG_1.MOV"),
            ("{stem}", "noext", "noext"),
        ];
        for (template, rel, expected) in table {
            assert_eq!(render(template, rel, Some(&i)), expected, "{template} {rel}");
        }
        assert_eq!(render("{camera}/{filename}", "a.jpg", Some(&info(None))), "unknown/a.jpg");
        // A member of a group takes its key's stem; its name stays its own.
        let member = AssetInfo {
            group: Some(crate::model::GroupName { key: b"d/IMG_1.HEIC".to_vec(), stem: "IMG_1".to_owned() }),
            ..i.clone()
        };
        assert_eq!(render("{stem}.{ext}", "d/IMG_1_HEVC.MOV", Some(&member)), "IMG_1.MOV");
        assert_eq!(render(DEFAULT, "d/IMG_1_HEVC.MOV", Some(&member)), "d/IMG_1_HEVC.MOV");
        assert_eq!(render("{year}/{filename}", "a.jpg", None), "unknown/a.jpg");
        // Regression: a camera name past 255 bytes made a folder no file
        // system takes, and the upload failed for good.
        let long = render("{camera}/{filename}", "a.jpg", Some(&info(Some(&"é".repeat(200)))));
        assert_eq!(long, format!("{}/a.jpg", "é".repeat(50)));
    }

    #[test]
    fn bad_templates_name_the_problem() {
        let table = [
            ("{year}/{monht}/{filename}", "unknown variable `{monht}`"),
            ("{year}/{filename", "is not closed"),
            ("{year}/}{filename}", "`}` without `{`"),
            ("{year}/{month}", "does not name the file"),
            ("{year}/../{filename}", "`..` folder"),
            ("./{filename}", "`.` folder"),
        ];
        for (template, message) in table {
            let error = Layout::parse(template).expect_err(template).to_string();
            assert!(error.contains(message), "{template}: {error}");
        }
        assert!(!Layout::default().needs_info());
        assert!(Layout::parse("{kind}/{filename}").expect("valid").needs_info());
    }
}
