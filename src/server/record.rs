//! `server.json`: how clients find the running server. Written atomically
//! once the server is ready, removed when it exits cleanly.

use std::fs;
use std::io::{ErrorKind, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::SystemTime;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::auth::create_private_dir;

/// What `server.json` says about the running server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerRecord {
    /// Base URL clients connect to, e.g. `http://127.0.0.1:8000`.
    pub url: String,
    pub pid: u32,
    pub version: String,
    /// RFC 3339, UTC.
    pub started_at: String,
}

impl ServerRecord {
    /// The record of this process, serving on `address`.
    pub fn for_this_process(address: SocketAddr, started: SystemTime) -> Self {
        Self {
            url: format!("http://{}", client_address(address)),
            pid: std::process::id(),
            version: crate::VERSION.to_owned(),
            started_at: humantime::format_rfc3339_millis(started).to_string(),
        }
    }

    /// Write the record to `path` all at once: a reader sees the old file or
    /// the new one, never half of either.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let dir = path
            .parent()
            .context("server.json has no parent directory")?;
        create_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut file = tempfile::Builder::new()
            .prefix(".server.json")
            .permissions(fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        // No fsync: the record is rewritten at every start, and a reader
        // still sees the whole old file or the whole new one.
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        file.write_all(&text)
            .with_context(|| format!("cannot write in {}", dir.display()))?;
        // The persist error's message already ends with its cause, which it
        // also gives as its source: the cause alone, so it is said once.
        file.persist(path)
            .map_err(|error| error.error)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }

    /// The record at `path`, if there is one.
    pub fn read(path: &Path) -> anyhow::Result<Option<Self>> {
        let not_a_record = || {
            format!(
                "{} is not a server record; remove it (`punie serve` writes a new one), \
                 or name the server with --server",
                path.display()
            )
        };
        let record: Self = match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(not_a_record)?,
            Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        // `punie stop` signals the pid: one no process can have is damage,
        // not a server.
        if record.pid == 0 || i32::try_from(record.pid).is_err() {
            return Err(anyhow::anyhow!(
                "it records pid {}, which no process can have",
                record.pid
            ))
            .with_context(not_a_record);
        }
        Ok(Some(record))
    }

    /// Remove the record at `path` if it is still this one: a newer server may
    /// have replaced it.
    pub fn remove(&self, path: &Path) -> anyhow::Result<()> {
        if Self::read(path)?.as_ref() == Some(self) {
            fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))?;
        }
        Ok(())
    }
}

/// Where a client on this machine reaches a server bound to `address`.
fn client_address(address: SocketAddr) -> SocketAddr {
    let ip = match address.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, address.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_bind_is_reached_over_loopback() {
        let record =
            ServerRecord::for_this_process("0.0.0.0:8000".parse().unwrap(), SystemTime::now());
        assert_eq!(record.url, "http://127.0.0.1:8000");
        let record = ServerRecord::for_this_process("[::]:9".parse().unwrap(), SystemTime::now());
        assert_eq!(record.url, "http://[::1]:9");
    }

    #[test]
    fn the_record_round_trips_and_is_removed_only_when_it_is_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("punie/server.json");
        let ours =
            ServerRecord::for_this_process("127.0.0.1:1".parse().unwrap(), SystemTime::now());
        ours.write(&path).unwrap();
        assert_eq!(ServerRecord::read(&path).unwrap(), Some(ours.clone()));

        let newer = ServerRecord {
            pid: ours.pid + 1,
            ..ours.clone()
        };
        newer.write(&path).unwrap();
        ours.remove(&path).unwrap();
        assert_eq!(ServerRecord::read(&path).unwrap(), Some(newer.clone()));
        newer.remove(&path).unwrap();
        assert_eq!(ServerRecord::read(&path).unwrap(), None);
    }
}
