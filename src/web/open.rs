//! `punie open`: ask the running server for a fresh sign-in link, with the
//! access token like every other client, and open it in the browser.
//!
//! The browser is `$BROWSER` (a `:`-separated list of commands, `%s` standing
//! for the link) or `xdg-open`. When none of them works, the link is printed
//! for the person to open. The token itself never leaves this process, and
//! nothing but the link goes to the browser; it talks to no ACP endpoint.
//! A token that is missing matters only to a server that answers: with none
//! listening, `punie open` says so like every other client.

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
        crate::say!("Open this link to sign in; it works once, within {lifetime}.");
        return Ok(Outcome::Done);
    }
    match open_in_browser(&link.url).await {
        Ok(command) => {
            crate::say!("Opened Punie in the browser ({command}).");
        }
        Err(why) => {
            crate::say!(
                "punie: cannot open a browser ({why}). Open this link to sign in; it works once, within {lifetime}:"
            );
            crate::client::print_out(&format!("{}\n", link.url))?;
        }
    }
    Ok(Outcome::Done)
}

/// Ask the server for a link; `None` when no server answers.
async fn new_link(target: &Target) -> anyhow::Result<Option<Link>> {
    let token = target.token();
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let url = format!("{}/sign-in", target.http_url);
    let mut request = client.post(&url);
    if let Ok(token) = &token {
        request = request.bearer_auth(token.as_str());
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) if error.is_connect() => {
            crate::say!(
                "punie: no Punie server at {} (nothing is listening there). Start one with `punie serve`.",
                target.http_url
            );
            return Ok(None);
        }
        Err(error) => return Err(error).context(format!("cannot ask {url} for a sign-in link")),
    };
    let status = response.status();
    if let (reqwest::StatusCode::UNAUTHORIZED, Err(why)) = (status, &token) {
        anyhow::bail!(
            "the server at {} wants an access token (401). {}",
            target.http_url,
            crate::client::no_token_fix(why, &target.token_file)
        );
    }
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

/// Run one browser command. It is split into words as a shell would split
/// it, quotes honoured, but run without one: the link is never shell text.
/// The link replaces `%s` wherever it appears, or comes last when nothing
/// says where.
async fn run_browser(command: &str, url: &str) -> Result<(), String> {
    let argv = browser_argv(command, url)?;
    let (program, args) = argv.split_first().ok_or("it names no program")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|error| match error.kind() {
            std::io::ErrorKind::NotFound => "not found".to_owned(),
            _ => format!("cannot run it: {error}"),
        })?;
    match tokio::time::timeout(BROWSER_START, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("it failed ({status})")),
        Ok(Err(error)) => Err(error.to_string()),
        // Still running: a browser that stays in the foreground. It keeps
        // running after this process exits.
        Err(_) => Ok(()),
    }
}

/// The words of a browser `command`, the link in place of `%s` (or last).
fn browser_argv(command: &str, url: &str) -> Result<Vec<String>, String> {
    let mut words = shell_words::split(command)
        .map_err(|error| format!("it cannot be split into words: {error}"))?;
    if words.iter().any(|word| word.contains("%s")) {
        for word in &mut words {
            *word = word.replace("%s", url);
        }
    } else {
        words.push(url.to_owned());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_goes_where_percent_s_says_quoted_or_not() {
        let url = "http://127.0.0.1:1/sign-in/x";
        assert_eq!(
            browser_argv("firefox --new-tab '%s'", url).unwrap(),
            ["firefox", "--new-tab", url]
        );
        assert_eq!(
            browser_argv("\"/opt/My Browser/run\" --url=%s", url).unwrap(),
            ["/opt/My Browser/run", &format!("--url={url}")]
        );
        assert_eq!(browser_argv("w3m", url).unwrap(), ["w3m", url]);
        assert!(browser_argv("open 'unclosed", url).is_err());
    }
}
