//! The integration suite: one binary, real `photosync` processes on
//! temporary directories. `harness` builds environments and libraries; each
//! other module covers one command or failure mode.

mod harness;

mod backup;
mod budget;
mod capture;
mod cli;
mod compat;
mod conditions;
mod crash;
mod daemon;
mod dropbox;
mod dropbox_server;
mod fake_http;
mod faults;
mod formats;
mod google_server;
mod googlephotos;
mod groups;
mod immich;
mod immich_server;
mod keyring;
mod live;
mod missing;
mod nextcloud;
mod onedrive;
mod onedrive_server;
mod order;
mod proxy;
mod rclone;
mod s3;
mod s3_faults;
mod s3_server;
mod service;
mod signals;
mod signin;
mod sleep;
mod system_bus;
mod verify;
mod webdav;
