//! `photosync resume`: end a pause.

use super::Exit;
use super::control::{require, unexpected};
use photosync::config::Config;
use photosync::ipc::protocol::{Request, Response};

/// Arguments of `photosync resume`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(config: &Config, _args: &Args) -> anyhow::Result<Exit> {
    match require(config, &Request::Resume)? {
        Response::Done => println!("Resumed."),
        other => return Err(unexpected(&other)),
    }
    Ok(Exit::Done)
}
