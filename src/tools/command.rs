//! `run_command`: through the client's `terminal/*` when it offers them (the
//! IDE shows the output live), else as a process Punie runs itself in the
//! workspace. Either way bounded by a timeout (one asked for past the most
//! is cut to it, and the model told), and stopped when the turn is
//! cancelled. Run here, it ends when its own process exits, and what it left
//! running in the background is stopped then; the model is told so.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agent_client_protocol::v1::schema::{
    CreateTerminalRequest, KillTerminalRequest, ReleaseTerminalRequest, Terminal,
    TerminalExitStatus, TerminalId, TerminalOutputRequest, ToolCallContent, ToolCallStatus,
    WaitForTerminalExitRequest,
};
use serde::Deserialize;
use serde_json::Value;

use super::permission;
use super::{
    ClientPort, MODEL_OUTPUT_LIMIT, Report, Stop, ToolContext, ToolOutcome, arguments, ask_client,
    for_the_model, text_content,
};
use crate::workspace::{ExitStatus, TerminalOutput, Terminals};

/// How long a command may run when the model sets no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest timeout the model may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Output a command's terminal keeps.
const OUTPUT_LIMIT: u64 = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandArgs {
    command: String,
    args: Option<Vec<String>>,
    cwd: Option<String>,
    timeout_secs: Option<u64>,
}

/// How the command ended, and what it printed.
struct Ran {
    exit: Option<ExitStatus>,
    timed_out: bool,
    output: String,
    dropped: Dropped,
}

/// What the terminal dropped from the start of the output to stay within
/// its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dropped {
    Nothing,
    Bytes(usize),
    /// A client's terminal says only that it dropped some.
    Unknown,
}

pub(super) async fn run<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    arguments_json: &Value,
) -> Result<ToolOutcome, Stop> {
    let args: CommandArgs = arguments("run_command", arguments_json)?;
    // Nobody is asked to allow nothing.
    if args.command.trim().is_empty() {
        return Err(Stop::Failed(
            "`command` is empty: give the command line to run, or the program to run with `args`"
                .to_owned(),
        ));
    }
    let cwd = context
        .workspace
        .resolve(Path::new(args.cwd.as_deref().unwrap_or(".")))?;
    // Before anyone is asked to allow a command that cannot start.
    Terminals::check_cwd(context.workspace, &cwd)
        .map_err(|error| Stop::Failed(error.to_string()))?;
    // A timeout past the most is cut to it rather than refused: the command
    // most often ends long before either, and refusing would cost the model
    // a round trip; it is told, so a command stopped at the most is no
    // surprise.
    let (timeout, cut_from) = match args.timeout_secs {
        None => (DEFAULT_TIMEOUT, None),
        // It would stop every command before it could do anything.
        Some(0) => {
            return Err(Stop::Failed(format!(
                "timeout_secs must be from 1 to {} seconds (120 when left out); 0 would stop the command at once",
                MAX_TIMEOUT.as_secs()
            )));
        }
        Some(secs) if secs > MAX_TIMEOUT.as_secs() => (MAX_TIMEOUT, Some(secs)),
        Some(secs) => (Duration::from_secs(secs), None),
    };
    let (program, argv) = match args.args {
        Some(argv) => (args.command, argv),
        None => ("sh".to_owned(), vec!["-c".to_owned(), args.command]),
    };
    let title = report.title().to_owned();
    permission::ask(context, report, "run_command", &title, Vec::new())
        .await
        .or_stop("the command was not run")?;
    let (ran, mut content) = if context.client.capabilities().terminal {
        on_client(context, report, program, argv, cwd, timeout).await?
    } else {
        report.progress(Vec::new());
        let ran = locally(context, &program, &argv, &cwd, timeout).await?;
        (ran, Vec::new())
    };
    // The output goes along as text even beside the client's terminal: other
    // attached clients, and a later `session/load`, have no such terminal.
    let mut result = describe(&ran, timeout);
    if let Some(asked) = cut_from {
        result = format!(
            "it ran with timeout_secs {}, the most, not the {asked} asked for; {result}",
            MAX_TIMEOUT.as_secs()
        );
    }
    content.push(text_content(&result));
    report.finish(status_shown_for(&ran), content);
    Ok(ToolOutcome::ok(result))
}

/// A command that ran but did not succeed (a non-zero exit, a signal, the
/// timeout) shows as failed, as a shell's prompt would; the model is told the
/// same either way, exit code and output, and decides what it means.
fn status_shown_for(ran: &Ran) -> ToolCallStatus {
    let succeeded = !ran.timed_out && ran.exit.as_ref().is_some_and(|exit| exit.code == Some(0));
    if succeeded {
        ToolCallStatus::Completed
    } else {
        ToolCallStatus::Failed
    }
}

/// Run through the client's terminal, which the client shows as it runs.
async fn on_client<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    program: String,
    argv: Vec<String>,
    cwd: PathBuf,
    timeout: Duration,
) -> Result<(Ran, Vec<ToolCallContent>), Stop> {
    let session = context.session_id.clone();
    // The client may start the command as soon as it reads the request, so
    // a cancel from here on may stop it part way.
    report.begin();
    let create = CreateTerminalRequest::new(session.clone(), program)
        .args(argv)
        .cwd(context.workspace.as_named(&cwd))
        .output_byte_limit(OUTPUT_LIMIT);
    // Not raced against the cancel here: the port answers at once when the
    // turn is cancelled, and stops a terminal created after that itself.
    let terminal = match context.client.request(create).await {
        Ok(created) => created.terminal_id,
        Err(_) if context.cancel.is_cancelled() => return Err(Stop::Cancelled),
        Err(error) => {
            return Err(Stop::Failed(format!(
                "the client could not do terminal/create: {}",
                error.message
            )));
        }
    };
    if context.cancel.is_cancelled() {
        abandon(context, &terminal);
        return Err(Stop::Cancelled);
    }
    let content = vec![ToolCallContent::Terminal(Terminal::new(terminal.clone()))];
    report.progress(content.clone());
    let wait = ask_client(
        context,
        WaitForTerminalExitRequest::new(session.clone(), terminal.clone()),
    );
    let waited = tokio::time::timeout(timeout, wait).await;
    let timed_out = waited.is_err();
    let exit = match waited {
        Ok(Ok(exited)) => Some(exited.exit_status),
        Ok(Err(stop)) => {
            abandon(context, &terminal);
            return Err(stop);
        }
        Err(_) => {
            context
                .client
                .send_detached(KillTerminalRequest::new(session.clone(), terminal.clone()));
            None
        }
    };
    let output = match ask_client(
        context,
        TerminalOutputRequest::new(session.clone(), terminal.clone()),
    )
    .await
    {
        Ok(output) => output,
        Err(stop) => {
            abandon(context, &terminal);
            return Err(stop);
        }
    };
    context
        .client
        .send_detached(ReleaseTerminalRequest::new(session, terminal));
    let exit = exit.or(output.exit_status).map(from_acp);
    let ran = Ran {
        exit,
        timed_out,
        output: output.output,
        dropped: if output.truncated {
            Dropped::Unknown
        } else {
            Dropped::Nothing
        },
    };
    Ok((ran, content))
}

/// Stop the client's terminal and let it go, without waiting for the
/// answers: a cancelled turn ends now, and a failed one has nothing more to
/// ask of it.
fn abandon<C: ClientPort>(context: &ToolContext<'_, C>, terminal: &TerminalId) {
    let session = context.session_id;
    context
        .client
        .send_detached(KillTerminalRequest::new(session.clone(), terminal.clone()));
    context.client.send_detached(ReleaseTerminalRequest::new(
        session.clone(),
        terminal.clone(),
    ));
}

/// Run as a process of the server's own, inside the workspace.
async fn locally<C: ClientPort>(
    context: &ToolContext<'_, C>,
    program: &str,
    argv: &[String],
    cwd: &Path,
    timeout: Duration,
) -> Result<Ran, Stop> {
    let terminals = context.terminals;
    let id = terminals
        .create(
            context.workspace,
            program,
            argv,
            &[],
            Some(cwd),
            Some(OUTPUT_LIMIT as usize),
        )
        .map_err(|error| Stop::Failed(error.to_string()))?;
    let outcome = tokio::select! {
        biased;
        () = context.cancel.cancelled() => None,
        waited = tokio::time::timeout(timeout, terminals.wait(&id)) => Some(waited),
    };
    let timed_out = match outcome {
        None => {
            // What it printed is at hand: the model learns how far it got.
            let so_far = terminals
                .output(&id)
                .map(|output| format!("until then, {}", printed(&output.output, dropped(&output))));
            let _ = terminals.release(&id);
            return Err(Stop::Interrupted(so_far.unwrap_or_default()));
        }
        Some(Ok(_)) => false,
        Some(Err(_)) => {
            let _ = terminals.kill(&id);
            let _ = terminals.wait(&id).await;
            true
        }
    };
    let output = terminals
        .output(&id)
        .map_err(|error| Stop::Failed(error.to_string()))?;
    let _ = terminals.release(&id);
    Ok(Ran {
        dropped: dropped(&output),
        exit: if timed_out { None } else { output.exit },
        timed_out,
        output: output.output,
    })
}

fn dropped(output: &TerminalOutput) -> Dropped {
    if output.dropped > 0 {
        Dropped::Bytes(output.dropped)
    } else {
        Dropped::Nothing
    }
}

fn from_acp(status: TerminalExitStatus) -> ExitStatus {
    ExitStatus {
        code: status.exit_code,
        signal: status.signal,
        // A client's terminal does not say.
        stopped_background: false,
    }
}

/// What the model is told about the run.
fn describe(ran: &Ran, timeout: Duration) -> String {
    let ending = match (&ran.exit, ran.timed_out) {
        (_, true) => format!("timed out after {} s and was stopped", timeout.as_secs()),
        (
            Some(ExitStatus {
                code: Some(code), ..
            }),
            _,
        ) => format!("exit code {code}"),
        (
            Some(ExitStatus {
                signal: Some(signal),
                ..
            }),
            _,
        ) => format!("killed by {signal}"),
        _ => "ended".to_owned(),
    };
    // The model may have meant them to keep running (a server for later
    // calls): it learns they did not.
    let stopped = if ran
        .exit
        .as_ref()
        .is_some_and(|exit| exit.stopped_background)
    {
        "; background processes it left were stopped"
    } else {
        ""
    };
    format!("{ending}{stopped}; {}", printed(&ran.output, ran.dropped))
}

/// How far into the kept output the cut looks for a line's start.
const LINE_SEARCH: usize = 4096;

/// What a command printed, as the model is shown it: "output:" and the text,
/// cut to fit with one mark that counts every byte missing.
fn printed(output: &str, dropped: Dropped) -> String {
    let output = &*as_plain_text(output);
    if dropped == Dropped::Nothing {
        if output.is_empty() {
            return "no output".to_owned();
        }
        return format!("output:\n{}", for_the_model(output));
    }
    // The beginning is gone already, so what the model gets is the end,
    // which is where a command says how it went.
    let room = MODEL_OUTPUT_LIMIT - 100;
    let start = output.ceil_char_boundary(output.len().saturating_sub(room));
    // From the start of a line, when one begins soon: a number cut in two
    // would read as another number.
    let start = match output[start..].find('\n') {
        Some(end) if start > 0 && end < LINE_SEARCH && !output[..start].ends_with('\n') => {
            start + end + 1
        }
        _ => start,
    };
    let mark = match dropped {
        Dropped::Bytes(bytes) => format!("[… {} bytes cut …]", bytes + start),
        _ if start > 0 => format!("[… more than {start} bytes cut …]"),
        _ => "[… the beginning was cut …]".to_owned(),
    };
    format!("output:\n{mark}\n{}", &output[start..])
}

/// What a command printed as a log shows it: without the escapes that
/// colour it or move the cursor, and with each line as a terminal last drew
/// it, what follows its last `\r` — a progress bar redrawn a thousand times
/// is one line, not a thousand the model pays for.
fn as_plain_text(output: &str) -> Cow<'_, str> {
    if !output.contains(['\x1b', '\r']) {
        return output.into();
    }
    let stripped = anstream::adapter::strip_str(output).to_string();
    let mut plain = String::with_capacity(stripped.len());
    for line in stripped.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        // A line ending `\r\n` is no redraw.
        let body = body.trim_end_matches('\r');
        plain.push_str(body.rsplit('\r').next().unwrap_or(body));
        plain.push_str(newline);
    }
    plain.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_and_redrawn_lines_reach_the_model_as_a_log_shows_them() {
        let output = "\x1b[1;32mCompiling\x1b[0m punie\r\n\
                      10%\r50%\r\x1b[K100%\n\
                      done\r\n";
        assert_eq!(
            printed(output, Dropped::Nothing),
            "output:\nCompiling punie\n100%\ndone\n"
        );
        assert_eq!(printed("plain\n", Dropped::Nothing), "output:\nplain\n");
    }

    fn mark_and_tail(shown: &str) -> (&str, &str) {
        let rest = shown.strip_prefix("output:\n").unwrap();
        rest.split_once('\n').unwrap()
    }

    #[test]
    fn output_cut_anywhere_is_counted_whole() {
        let kept = "é".repeat(512 * 1024); // 1 MiB, as a terminal keeps
        // The terminal dropped 55 MB; the model is shown the last ~32 KiB.
        let shown = printed(&kept, Dropped::Bytes(55_000_000));
        let (mark, tail) = mark_and_tail(&shown);
        assert!(tail.len() <= MODEL_OUTPUT_LIMIT && tail.len() > MODEL_OUTPUT_LIMIT / 2);
        assert_eq!(
            mark,
            format!("[… {} bytes cut …]", 55_000_000 + kept.len() - tail.len())
        );
        // A client's terminal does not say how much it dropped.
        let shown = printed(&kept, Dropped::Unknown);
        let (mark, tail) = mark_and_tail(&shown);
        assert_eq!(
            mark,
            format!("[… more than {} bytes cut …]", kept.len() - tail.len())
        );
        let shown = printed("done\n", Dropped::Unknown);
        assert_eq!(
            mark_and_tail(&shown),
            ("[… the beginning was cut …]", "done\n")
        );
        // Cut where a line begins, when one begins soon after the cut.
        let lines: String = (1..=100_000).map(|n| format!("{n}\n")).collect();
        let shown = printed(&lines, Dropped::Unknown);
        let (_, tail) = mark_and_tail(&shown);
        let numbers: Vec<u64> = tail.lines().take(2).map(|n| n.parse().unwrap()).collect();
        assert_eq!(numbers[0] + 1, numbers[1], "the first line is whole");
        assert!(tail.ends_with("100000\n"));
        // Nothing dropped: cut from the middle, if at all.
        assert_eq!(printed("", Dropped::Nothing), "no output");
        let long = "x".repeat(MODEL_OUTPUT_LIMIT * 2);
        let shown = printed(&long, Dropped::Nothing);
        let cut = MODEL_OUTPUT_LIMIT * 2 - (shown.matches('x').count());
        assert!(
            shown.contains(&format!("[… {cut} bytes cut …]")),
            "{}",
            &shown[..40]
        );
    }
}
