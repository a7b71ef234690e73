//! `punie sessions`: the sessions the server keeps, listed or deleted, and the
//! newest session of a workspace, which `punie ask --continue` resumes.
//!
//! The server owns every session; this only asks it, through the standard ACP
//! methods (`session/list`, `session/delete`), and prints what it says.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{
    ClientCapabilities, DeleteSessionRequest, InitializeResponse, ListSessionsRequest,
    SessionCapabilities, SessionId, SessionInfo,
};
use agent_client_protocol::{Agent, Client, Error, ErrorCode};
use anyhow::Context as _;
use serde_json::{Value, json};
use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

use super::status::Outcome;
use super::{Target, terminal_safe};

/// `punie sessions`: every session the server keeps, newest first — only
/// those in `cwd` when it is given — as a table, or as a JSON array.
pub async fn list(target: &Target, cwd: Option<&Path>, json: bool) -> anyhow::Result<Outcome> {
    let cwd = cwd.map(absolute).transpose()?;
    let found = with_server(target, async |cx, server| {
        all(cx, server, cwd.as_deref()).await
    })
    .await?;
    let Some(sessions) = found else {
        return Ok(Outcome::NoServer);
    };
    if json {
        super::print_out(&format!("{}\n", as_json(&sessions)))?;
    } else if sessions.is_empty() {
        match &cwd {
            Some(cwd) => crate::say!("punie: no sessions in {}.", cwd.display()),
            None => crate::say!("punie: no sessions yet; `punie ask` starts one."),
        }
    } else {
        super::print_out(&table(&sessions))?;
    }
    Ok(Outcome::Done)
}

/// `punie sessions delete ID`: the server forgets the session, on disk too.
pub async fn delete(target: &Target, id: &str) -> anyhow::Result<Outcome> {
    // The server would answer that there is no session "", which reads as
    // if the id had been given and lost.
    anyhow::ensure!(
        !id.trim().is_empty(),
        "`punie sessions delete` needs the id of a session; `punie sessions` lists them"
    );
    let deleted = with_server(target, async |cx, server| {
        require(server, "session/delete", |offered| offered.delete.is_some())?;
        cx.send_request(DeleteSessionRequest::new(id.to_owned()))
            .block_task()
            .await
            .map_err(|error| match error.code {
                // The server's words name ACP methods; a person runs commands.
                ErrorCode::RESOURCE_NOT_FOUND => Error::new(
                    ErrorCode::RESOURCE_NOT_FOUND,
                    format!("there is no session {id}; `punie sessions` lists them"),
                ),
                _ => error,
            })
    })
    .await?;
    if deleted.is_none() {
        return Ok(Outcome::NoServer);
    }
    crate::say!("punie: deleted session {id}.");
    Ok(Outcome::Done)
}

/// The most recently used session in `cwd`, if there is one.
pub async fn newest(
    cx: &ConnectionTo<Agent>,
    server: &InitializeResponse,
    cwd: &Path,
) -> Result<Option<SessionId>, Error> {
    require(server, "session/list", |offered| offered.list.is_some())?;
    // The server lists newest first, so the first page is enough.
    let page = cx
        .send_request(ListSessionsRequest::new().cwd(cwd.to_path_buf()))
        .block_task()
        .await?;
    Ok(page
        .sessions
        .into_iter()
        .next()
        .map(|session| session.session_id))
}

/// Fail early, with the reason, when the server does not offer `method`: its
/// own answer would be a `-32601` worded for ACP developers.
pub fn require(
    server: &InitializeResponse,
    method: &str,
    offered: impl FnOnce(&SessionCapabilities) -> bool,
) -> Result<(), Error> {
    if offered(&server.agent_capabilities.session_capabilities) {
        return Ok(());
    }
    let message = match &server.agent_info {
        Some(info) if info.version != crate::VERSION => format!(
            "the server does not offer {method}: it is Punie {}, this punie is {}; restart it with `punie serve` from this one",
            info.version,
            crate::VERSION
        ),
        _ => format!("the server does not offer {method}"),
    };
    Err(Error::new(ErrorCode::METHOD_NOT_FOUND, message))
}

/// Run `work` on a connection that has completed `initialize`. `None` when no
/// server answers (already reported); a failed request is the error.
async fn with_server<T>(
    target: &Target,
    work: impl AsyncFnOnce(&ConnectionTo<Agent>, &InitializeResponse) -> Result<T, Error>,
) -> anyhow::Result<Option<T>> {
    let outcome = target
        .converse(async |channel| {
            Client
                .v1()
                .name("punie-sessions")
                .connect_with(channel, async |cx| {
                    let server =
                        super::initialize(&cx, "punie-sessions", ClientCapabilities::new()).await?;
                    work(&cx, &server).await
                })
                .await
        })
        .await;
    match outcome {
        Ok(Ok(value)) => Ok(Some(value)),
        Ok(Err(error)) => Err(anyhow::anyhow!(super::describe(&error))),
        // A server that refused is an error, not an absent server.
        Err(error) if error.answered => Err(error.into()),
        Err(error) => {
            crate::say!("punie: {error}");
            Ok(None)
        }
    }
}

/// Every page of `session/list`.
async fn all(
    cx: &ConnectionTo<Agent>,
    server: &InitializeResponse,
    cwd: Option<&Path>,
) -> Result<Vec<SessionInfo>, Error> {
    require(server, "session/list", |offered| offered.list.is_some())?;
    let mut sessions = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = cx
            .send_request(
                ListSessionsRequest::new()
                    .cwd(cwd.map(Path::to_path_buf))
                    .cursor(cursor.clone()),
            )
            .block_task()
            .await?;
        sessions.extend(page.sessions);
        match page.next_cursor {
            // A server that hands back the cursor it was given would keep us here forever.
            Some(next) if cursor.as_ref() == Some(&next) => {
                return Err(Error::new(
                    ErrorCode::INTERNAL_ERROR,
                    format!("session/list answered with the cursor it was given (`{next}`)"),
                ));
            }
            Some(next) => cursor = Some(next),
            None => return Ok(sessions),
        }
    }
}

/// `dir` made absolute, and otherwise as written: the server matches a
/// workspace both by where it leads now and as written, so a symlink since
/// pointed elsewhere still lists what was made through it, which its
/// resolved path would not.
fn absolute(dir: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(dir)
        .with_context(|| format!("--cwd `{}` cannot be made absolute", dir.display()))
}

/// The same fields for every session, present even when empty, so scripts
/// need not guess.
fn as_json(sessions: &[SessionInfo]) -> Value {
    sessions
        .iter()
        .map(|session| {
            json!({
                "sessionId": session.session_id,
                "cwd": session.cwd,
                "title": session.title,
                "updatedAt": session.updated_at,
            })
        })
        .collect()
}

/// The most columns of a terminal a title takes in the table: as many as the
/// server's longest title of narrow characters, so only wide ones are cut.
const TITLE_COLUMNS: usize = 80;

/// Aligned columns: id, last update, title, workspace. The workspace comes
/// last because it is the longest and needs no padding. Columns are as wide
/// as a terminal shows their text — a CJK character takes two columns, a
/// combining or zero-width one none — not as many characters as they hold.
fn table(sessions: &[SessionInfo]) -> String {
    let rows: Vec<[String; 4]> =
        std::iter::once(["ID", "UPDATED", "TITLE", "CWD"].map(String::from))
            .chain(sessions.iter().map(|session| {
                // All as the server sent them: none may restyle the
                // terminal or reorder the table.
                [
                    one_line(&session.session_id.0),
                    session
                        .updated_at
                        .as_deref()
                        .map_or_else(|| "-".to_owned(), |at| one_line(&when(at))),
                    session.title.as_deref().map_or_else(
                        || "-".to_owned(),
                        |title| cut(&one_line(title), TITLE_COLUMNS).into_owned(),
                    ),
                    one_line(&session.cwd.to_string_lossy()),
                ]
            }))
            .collect();
    let width = |column: usize| {
        rows.iter()
            .map(|row| row[column].width())
            .max()
            .unwrap_or(0)
    };
    let widths = [width(0), width(1), width(2)];
    let mut out = String::new();
    for [id, updated, title, cwd] in &rows {
        for (text, width) in [id, updated, title].into_iter().zip(widths) {
            out.push_str(text);
            out.extend(std::iter::repeat_n(' ', width - text.width() + 2));
        }
        out.push_str(cwd);
        out.push('\n');
    }
    out
}

/// `text` in at most `columns` columns of a terminal: cut, and ended with
/// `…`, when it takes more. What takes no column of its own (a combining
/// mark) stays with the character before it.
fn cut(text: &str, columns: usize) -> Cow<'_, str> {
    if text.width() <= columns {
        return text.into();
    }
    let room = columns.saturating_sub('…'.width().unwrap_or(1));
    let mut kept = String::new();
    let mut used = 0;
    for c in text.chars() {
        used += c.width().unwrap_or(0);
        if used > room {
            break;
        }
        kept.push(c);
    }
    kept.push('…');
    kept.into()
}

/// A timestamp to the second: the server's milliseconds are noise in a table.
fn when(updated_at: &str) -> String {
    match humantime::parse_rfc3339_weak(updated_at) {
        Ok(time) => humantime::format_rfc3339_seconds(time).to_string(),
        Err(_) => updated_at.to_owned(),
    }
}

/// A title on one line, so it cannot break the table.
fn one_line(title: &str) -> String {
    terminal_safe(title)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, title: Option<&str>, updated_at: Option<&str>, cwd: &str) -> SessionInfo {
        SessionInfo::new(id.to_owned(), cwd)
            .title(title.map(str::to_owned))
            .updated_at(updated_at.map(str::to_owned))
    }

    #[test]
    fn the_table_lines_up_and_keeps_every_row_on_one_line() {
        let printed = table(&[
            session(
                "a1",
                Some("fix the build\nplease"),
                Some("2026-03-01T10:20:30.456Z"),
                "/src/app",
            ),
            session("session-two", None, None, "/src/other app"),
        ]);
        assert_eq!(
            printed,
            "\
ID           UPDATED               TITLE                 CWD
a1           2026-03-01T10:20:30Z  fix the build please  /src/app
session-two  -                     -                     /src/other app
"
        );
    }

    #[test]
    fn wide_combining_and_zero_width_characters_keep_the_columns_in_line() {
        let titles = [
            "日本語のタイトル長い",
            "e\u{301}\u{301}\u{301} combining",
            "zero\u{200b}width\u{200d}",
        ];
        let sessions: Vec<SessionInfo> = titles
            .iter()
            .map(|title| session("id", Some(title), None, "/cwd"))
            .collect();
        let printed = table(&sessions);
        let starts: Vec<usize> = printed
            .lines()
            .map(|line| line[..line.rfind("  ").unwrap() + 2].width())
            .collect();
        // "ID" and two spaces, "UPDATED" and two, twenty columns of title and two.
        assert_eq!(starts, [35; 4], "{printed}");
        for title in titles {
            assert!(printed.contains(title), "{printed}");
        }
    }

    #[test]
    fn a_title_wider_than_its_column_is_cut_by_columns() {
        let wide = "字".repeat(TITLE_COLUMNS);
        let cut = cut(&wide, TITLE_COLUMNS);
        assert_eq!(cut.width(), TITLE_COLUMNS - 1, "{cut}");
        assert!(cut.ends_with("字…"), "{cut}");
        // A combining mark stays with its letter.
        assert_eq!(super::cut("abe\u{301}\u{301}cd", 4), "abe\u{301}\u{301}…");
        assert_eq!(super::cut("abc", 3), "abc");
    }

    #[test]
    fn a_title_cannot_reorder_or_style_the_table() {
        assert_eq!(one_line("\u{202e}evil\u{1b}[2J\tend"), "evil[2J end");
    }

    #[test]
    fn no_cell_can_reorder_or_style_the_table() {
        let shown = table(&[session(
            "id\u{1b}[31m",
            Some("title"),
            Some("when\u{202e}"),
            "/w/\u{1b}]0;pwned\u{7}dir\u{202e}",
        )]);
        assert!(
            !shown.contains(['\u{1b}', '\u{7}', '\u{202e}']),
            "{shown:?}"
        );
        assert!(shown.contains("/w/]0;pwneddir"), "{shown:?}");
    }

    #[test]
    fn a_timestamp_that_does_not_parse_is_shown_as_given() {
        assert_eq!(when("yesterday"), "yesterday");
    }

    #[test]
    fn json_has_every_field_even_when_empty() {
        assert_eq!(
            as_json(&[session("a1", None, None, "/w")]),
            json!([{"sessionId": "a1", "cwd": "/w", "title": null, "updatedAt": null}])
        );
    }
}
