//! The destinations photosync knows: one [`DestinationKind`] variant per
//! `type`, and the one place that maps a `type` to the folder that parses
//! its keys and builds it. Adding a destination is its folder under
//! `destination/` plus a line in each match here.

use std::path::Path;
use std::sync::Arc;

use super::dropbox::{DropboxConfig, DropboxDestination};
use super::folder::{FolderConfig, FolderDestination};
use super::googlephotos::{GooglePhotosConfig, GooglePhotosDestination};
use super::immich::{ImmichConfig, ImmichDestination};
use super::onedrive::{OneDriveConfig, OneDriveDestination};
use super::rclone::{RcloneConfig, RcloneDestination};
use super::s3::{S3Config, S3Destination};
use super::webdav::{WebDavConfig, WebDavDestination};
use super::{Destination, SessionStore};
use crate::config::{ConfigError, Section};

/// Every `type` a `[[destination]]` may have.
pub const TYPES: &[&str] = &["folder", "s3", "webdav", "rclone", "immich", "dropbox", "onedrive", "googlephotos"];

/// A destination's type and its validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationKind {
    /// A local or mounted folder.
    Folder(FolderConfig),
    /// S3-compatible object storage.
    S3(Box<S3Config>),
    /// A WebDAV server (Nextcloud, a NAS…).
    WebDav(Box<WebDavConfig>),
    /// A remote of the user's rclone config, through `rclone rcd`.
    Rclone(Box<RcloneConfig>),
    /// An Immich server.
    Immich(Box<ImmichConfig>),
    /// Dropbox, signed in with `photosync auth`.
    Dropbox(Box<DropboxConfig>),
    /// OneDrive, signed in with `photosync auth`.
    OneDrive(Box<OneDriveConfig>),
    /// Google Photos, signed in with `photosync auth`.
    GooglePhotos(Box<GooglePhotosConfig>),
}

/// Validates the keys (all but `name` and `type`) of a destination of
/// `type_name` called `name`.
pub fn parse(
    type_name: &str,
    name: &str,
    table: toml::Table,
    section: &Section<'_>,
) -> Result<DestinationKind, ConfigError> {
    match type_name {
        "folder" => FolderConfig::parse(table, section).map(DestinationKind::Folder),
        "s3" => S3Config::parse(table, section).map(|c| DestinationKind::S3(Box::new(c))),
        "webdav" => WebDavConfig::parse(table, section).map(|c| DestinationKind::WebDav(Box::new(c))),
        "rclone" => RcloneConfig::parse(table, section).map(|c| DestinationKind::Rclone(Box::new(c))),
        "immich" => ImmichConfig::parse(table, section).map(|c| DestinationKind::Immich(Box::new(c))),
        "dropbox" => DropboxConfig::parse(name, table, section).map(|c| DestinationKind::Dropbox(Box::new(c))),
        "onedrive" => OneDriveConfig::parse(name, table, section).map(|c| DestinationKind::OneDrive(Box::new(c))),
        "googlephotos" => {
            GooglePhotosConfig::parse(name, table, section).map(|c| DestinationKind::GooglePhotos(Box::new(c)))
        }
        other => {
            let known: Vec<String> = TYPES.iter().map(|t| format!("\"{t}\"")).collect();
            Err(section.error("type", &format!("unknown type `{other}`; supported: {}", known.join(", "))))
        }
    }
}

impl DestinationKind {
    /// The `type` spelling.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Folder(_) => "folder",
            Self::S3(_) => "s3",
            Self::WebDav(_) => "webdav",
            Self::Rclone(_) => "rclone",
            Self::Immich(_) => "immich",
            Self::Dropbox(_) => "dropbox",
            Self::OneDrive(_) => "onedrive",
            Self::GooglePhotos(_) => "googlephotos",
        }
    }

    /// What identifies the physical target (a folder path, a bucket URL and
    /// prefix): a destination whose location changes is a new destination.
    pub fn location(&self) -> String {
        match self {
            Self::Folder(folder) => folder.path.display().to_string(),
            Self::S3(s3) => format!("{}#{}/{}", s3.endpoint, s3.bucket, s3.prefix),
            Self::WebDav(webdav) => webdav.url.to_string(),
            Self::Rclone(rclone) => format!("rclone {}", rclone.remote),
            Self::Immich(immich) => format!("immich {}", immich.api),
            Self::Dropbox(dropbox) => format!("dropbox {} {}", dropbox.api_url, dropbox.folder),
            Self::OneDrive(onedrive) => {
                let root = if onedrive.app_folder { "approot" } else { "root" };
                format!("onedrive {} {root} {}", onedrive.graph_url, onedrive.folder)
            }
            Self::GooglePhotos(google) => format!("googlephotos {}", google.api_url),
        }
    }

    /// The local folder it writes into, if it is one (a source inside it
    /// would back up its own copies).
    pub fn local_path(&self) -> Option<&Path> {
        match self {
            Self::Folder(folder) => Some(&folder.path),
            Self::S3(_)
            | Self::WebDav(_)
            | Self::Rclone(_)
            | Self::Immich(_)
            | Self::Dropbox(_)
            | Self::OneDrive(_)
            | Self::GooglePhotos(_) => None,
        }
    }

    /// The OS keyring account its password is filed under, if it uses one.
    pub fn keyring_account(&self) -> Option<&str> {
        match self {
            Self::WebDav(webdav) => webdav.password.keyring_account(),
            Self::Immich(immich) => immich.api_key.keyring_account(),
            Self::Folder(_)
            | Self::S3(_)
            | Self::Rclone(_)
            | Self::Dropbox(_)
            | Self::OneDrive(_)
            | Self::GooglePhotos(_) => None,
        }
    }

    /// How it signs in with `photosync auth`, if it does.
    pub fn sign_in(&self) -> Option<crate::oauth::SignIn> {
        match self {
            Self::Dropbox(dropbox) => Some(dropbox.sign_in()),
            Self::OneDrive(onedrive) => Some(onedrive.sign_in()),
            Self::GooglePhotos(google) => Some(google.sign_in()),
            Self::Folder(_) | Self::S3(_) | Self::WebDav(_) | Self::Rclone(_) | Self::Immich(_) => None,
        }
    }

    /// Builds the destination; `sessions` keeps the progress of those that
    /// resume uploads; helpers it runs (rclone) listen in `runtime_dir`.
    pub fn open(&self, sessions: &Arc<dyn SessionStore>, runtime_dir: &Path) -> Arc<dyn Destination> {
        match self {
            Self::Folder(folder) => Arc::new(FolderDestination::new(folder.path.clone())),
            Self::S3(s3) => Arc::new(S3Destination::new(s3, Arc::clone(sessions))),
            Self::WebDav(webdav) => Arc::new(WebDavDestination::new(webdav, Arc::clone(sessions))),
            Self::Rclone(rclone) => Arc::new(RcloneDestination::new(rclone, runtime_dir)),
            Self::Immich(immich) => Arc::new(ImmichDestination::new(immich, Arc::clone(sessions))),
            Self::Dropbox(dropbox) => Arc::new(DropboxDestination::new(dropbox, Arc::clone(sessions))),
            Self::OneDrive(onedrive) => Arc::new(OneDriveDestination::new(onedrive, Arc::clone(sessions))),
            Self::GooglePhotos(google) => Arc::new(GooglePhotosDestination::new(google, Arc::clone(sessions))),
        }
    }
}
