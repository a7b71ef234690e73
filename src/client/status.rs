//! `punie status` and `punie stop`: ask the server how it is, and stop exactly
//! the server that was started — by the pid it recorded, once its own
//! `/health` confirms that pid. Never by process name.

use std::os::fd::OwnedFd;
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::Target;
use crate::config::Paths;
use crate::server::ServerRecord;

/// How long `status` and `stop` wait for `/health`.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `stop` waits for the server to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What `/health` says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    pub status: String,
    pub version: String,
    pub pid: u32,
    pub connections: u64,
    pub sessions: u64,
    pub uptime_seconds: f64,
    /// What else it reports (`conversationsInMemory`, …): `status --json`
    /// passes on all of it, including what newer servers add.
    #[serde(flatten)]
    pub more: serde_json::Map<String, serde_json::Value>,
}

/// How a status or stop command ended; the CLI turns it into an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered (status) or stopped (stop).
    Done,
    /// No server answers.
    NoServer,
}

/// Ask the server at `target` for its health.
pub async fn health(target: &Target) -> anyhow::Result<Health> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(HEALTH_TIMEOUT)
        .build()?;
    let response = client
        .get(format!("{}/health", target.http_url))
        .send()
        .await
        .map_err(|error| anyhow::anyhow!(describe_request_error(&error)))?;
    anyhow::ensure!(
        response.status().is_success(),
        "it answered HTTP {}",
        response.status()
    );
    response
        .json()
        .await
        .context("its /health answer is not Punie's")
}

fn describe_request_error(error: &reqwest::Error) -> String {
    if error.is_connect() {
        "nothing is listening there".to_owned()
    } else if error.is_timeout() {
        format!("no answer within {HEALTH_TIMEOUT:?}")
    } else {
        error.to_string()
    }
}

/// `punie status`: print how the server is, as text or JSON.
pub async fn status(target: &Target, json: bool) -> anyhow::Result<Outcome> {
    let health = match health(target).await {
        Ok(health) => health,
        Err(error) => {
            let why = format!("{error:#}");
            crate::say!(
                "punie: no Punie server at {} ({why}). Start one with `punie serve`.",
                target.http_url
            );
            if json {
                print_not_running(Some(&target.http_url), &why)?;
            }
            return Ok(Outcome::NoServer);
        }
    };
    if json {
        let mut value = serde_json::to_value(&health)?;
        value["running"] = true.into();
        value["url"] = target.http_url.clone().into();
        super::print_out(&format!("{value}\n"))?;
    } else {
        let uptime = Duration::from_secs(health.uptime_seconds.max(0.0) as u64);
        // Only a store in trouble is worth a line.
        let store = match health.more.get("store").and_then(|store| store.as_str()) {
            Some(problem) if problem != "ok" => {
                format!("  store        {}\n", crate::text::terminal_safe(problem))
            }
            _ => String::new(),
        };
        super::print_out(&format!(
            "Punie {} at {}\n  pid          {}\n  uptime       {}\n  connections  {}\n  sessions     {}\n{store}",
            health.version,
            target.http_url,
            health.pid,
            humantime::format_duration(uptime),
            health.connections,
            health.sessions
        ))?;
    }
    Ok(Outcome::Done)
}

/// `status --json` when no server answers, or none can be located: a script
/// reading stdout gets an object either way.
pub fn print_not_running(url: Option<&str>, why: &str) -> anyhow::Result<()> {
    let mut value = serde_json::json!({ "running": false, "error": why });
    if let Some(url) = url {
        value["url"] = url.into();
    }
    super::print_out(&format!("{value}\n"))
}

/// `punie stop`: SIGTERM to the recorded server, once its `/health` confirms
/// the pid, then wait for it to exit.
pub async fn stop(target: &Target, paths: &Paths) -> anyhow::Result<Outcome> {
    let Some(record) = &target.record else {
        let file = paths.server_file();
        match ServerRecord::read(&file) {
            Ok(Some(recorded)) => crate::say!(
                "punie: {} is not the server recorded in {} (that is {}, pid {}); `punie stop` stops only the recorded server, so nothing was signalled.",
                target.http_url,
                file.display(),
                recorded.url,
                recorded.pid
            ),
            Ok(None) => crate::say!(
                "punie: no running server is recorded in {}; nothing to stop.",
                file.display()
            ),
            Err(error) => crate::say!("punie: {error:#}; nothing to stop."),
        }
        return Ok(Outcome::NoServer);
    };
    // Held from before the check until the signal, so the pid cannot be reused in between.
    let process = match pidfd(record.pid) {
        Ok(process) => process,
        Err(_) => {
            crate::say!(
                "punie: the recorded server (pid {}) is not running.",
                record.pid
            );
            forget(record, paths);
            return Ok(Outcome::NoServer);
        }
    };
    let health = match health(target).await {
        Ok(health) => health,
        Err(error) => {
            crate::say!(
                "punie: the recorded server (pid {}) does not answer at {} ({error:#}); not signalling anything.",
                record.pid,
                target.http_url
            );
            return Ok(Outcome::NoServer);
        }
    };
    anyhow::ensure!(
        health.pid == record.pid,
        "the server at {} is pid {}, but the record says pid {}; not signalling anything",
        target.http_url,
        health.pid,
        record.pid
    );
    rustix::process::pidfd_send_signal(&process, rustix::process::Signal::TERM)
        .with_context(|| format!("cannot signal pid {}", record.pid))?;
    // The elapsed timer's own words ("deadline has elapsed") add nothing.
    tokio::time::timeout(STOP_TIMEOUT, exited(process))
        .await
        .map_err(|_| {
            anyhow::anyhow!("pid {} did not exit within {STOP_TIMEOUT:?}", record.pid)
        })??;
    crate::say!(
        "punie: stopped the server at {} (pid {}).",
        target.http_url,
        record.pid
    );
    Ok(Outcome::Done)
}

/// A record whose process is gone only misleads clients; remove it.
fn forget(record: &ServerRecord, paths: &Paths) {
    if record.remove(&paths.server_file()).is_ok() {
        crate::say!("punie: removed its stale record.");
    }
}

fn pidfd(pid: u32) -> std::io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| std::io::Error::other(format!("pid {pid} is not a process")))?;
    Ok(rustix::process::pidfd_open(
        pid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Completes when the process behind `process` exits: its pidfd turns readable.
async fn exited(process: OwnedFd) -> anyhow::Result<()> {
    // SAFETY: the AsyncFd owns the pidfd, and nothing else closes or replaces it.
    let process = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(process, tokio::io::Interest::READABLE)?
    };
    let _ready = process.readable().await?;
    Ok(())
}
