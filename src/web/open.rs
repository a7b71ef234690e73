//! `punie open`: ask the running server for a fresh sign-in link, with the
//! access token like every other client, and open it in the browser.
//!
//! The browser is `$BROWSER` (a `:`-separated list of commands, `%s` standing
//! for the link) or `xdg-open`. When none of them works, the link is printed
//! for the person to open. The token itself never leaves this process, and
//! nothing but the link goes to the browser; it talks to no ACP endpoint.

use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use serde::Deserialize;

use crate::client::Target;
use crate::client::status::Outcome;

/// How long the server may take to hand out a link.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a browser command may take to say it failed. One still running
/// after that is a browser that stays in the foreground: it opened the page.
const BROWSER_START: Duration = Duration::from_secs(3);

/// The command that opens a URL in the person's browser, when `$BROWSER` names none.
#[cfg(target_os = "macos")]
const SYSTEM_OPENER: &str = "open";
#[cfg(not(target_os = "macos"))]
const SYSTEM_OPENER: &str = "xdg-open";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Link {
    url: String,
    expires_in_seconds: u64,
}

/// `punie open`: sign a browser in to the server at `target`. With `print`,
/// only print the link.
pub async fn run(target: &Target, print: bool) -> anyhow::Result<Outcome> {
    let link = match new_link(target).await? {
        Some(link) => link,
        None => return Ok(Outcome::NoServer),
    };
    let lifetime = humantime::format_duration(Duration::from_secs(link.expires_in_seconds));
    if print {
        crate::client::print_out(&format!("{}\n", link.url))?;
        eprintln!("Open this link to sign in; it works once, within {lifetime}.");
        return Ok(Outcome::Done);
    }
    match open_in_browser(&link.url).await {
        Ok(command) => {
            eprintln!("Opened Punie in the browser ({command}).");
        }
        Err(why) => {
            eprintln!(
                "punie: cannot open a browser ({why}). Open this link to sign in; it works once, within {lifetime}:"
            );
            crate::client::print_out(&format!("{}\n", link.url))?;
        }
    }
    Ok(Outcome::Done)
}

/// Ask the server for a link; `None` when no server answers.
async fn new_link(target: &Target) -> anyhow::Result<Option<Link>> {
    let Some(token) = &target.token else {
        anyhow::bail!(
            "no access token: it is in {} once `punie serve` has run (or set PUNIE_TOKEN)",
            target.token_file.display()
        );
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let url = format!("{}/sign-in", target.http_url);
    let response = match client.post(&url).bearer_auth(token.as_str()).send().await {
        Ok(response) => response,
        Err(error) if error.is_connect() => {
            eprintln!(
                "punie: no Punie server at {} (nothing is listening there). Start one with `punie serve`.",
                target.http_url
            );
            return Ok(None);
        }
        Err(error) => return Err(error).context(format!("cannot ask {url} for a sign-in link")),
    };
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!(
            "the server at {} refused the access token (401). The token is in {} (or set PUNIE_TOKEN); `punie status` shows which server is running",
            target.http_url,
            target.token_file.display()
        );
    }
    anyhow::ensure!(
        status.is_success(),
        "the server at {} answered HTTP {status} when asked for a sign-in link; is it a Punie server of this version?",
        target.http_url
    );
    let link = response
        .json::<Link>()
        .await
        .with_context(|| format!("{url} did not answer with a sign-in link"))?;
    Ok(Some(link))
}

/// Open `url` with the first browser command that works; the command, or why
/// none did.
async fn open_in_browser(url: &str) -> Result<String, String> {
    let named: Vec<String> = std::env::var("BROWSER")
        .unwrap_or_default()
        .split(':')
        .map(str::trim)
        .filter(|command| !command.is_empty())
        .map(str::to_owned)
        .collect();
    // `BROWSER=:` names no command, as an empty one does.
    let commands = if named.is_empty() {
        vec![SYSTEM_OPENER.to_owned()]
    } else {
        named
    };
    let mut failures = Vec::new();
    for command in commands {
        match run_browser(&command, url).await {
            Ok(()) => return Ok(command),
            Err(why) => failures.push(format!("{command}: {why}")),
        }
    }
    Err(failures.join("; "))
}

/// Run one browser command through the shell, which finds it on `PATH` and
/// splits its arguments; the link goes in as a positional parameter, never
/// as shell text.
async fn run_browser(command: &str, url: &str) -> Result<(), String> {
    let script = if command.contains("%s") {
        command.replace("%s", "\"$1\"")
    } else {
        format!("{command} \"$1\"")
    };
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", &script, "punie-open", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| format!("cannot run sh: {error}"))?;
    match tokio::time::timeout(BROWSER_START, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => match status.code() {
            Some(127) => Err("not found".to_owned()),
            _ => Err(format!("it failed ({status})")),
        },
        Ok(Err(error)) => Err(error.to_string()),
        // Still running: a browser that stays in the foreground. It keeps
        // running after this process exits.
        Err(_) => Ok(()),
    }
}
