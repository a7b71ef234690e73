//! `run_command`: through the client's `terminal/*` when it offers them (the
//! IDE shows the output live), else as a process Punie runs itself in the
//! workspace. Either way bounded by a timeout, and stopped when the turn is
//! cancelled.

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
    ClientPort, Report, Stop, ToolContext, ToolOutcome, arguments, ask_client, for_the_model,
    text_content,
};
use crate::workspace::ExitStatus;

/// How long a command may run when the model sets no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest timeout the model may ask for.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Output a command's terminal keeps.
const OUTPUT_LIMIT: u64 = 1024 * 1024;

#[derive(Deserialize)]
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
    truncated: bool,
}

pub(super) async fn run<C: ClientPort>(
    context: &ToolContext<'_, C>,
    report: &Report<'_, C>,
    arguments_json: &Value,
) -> Result<ToolOutcome, Stop> {
    let args: CommandArgs = arguments("run_command", arguments_json)?;
    let cwd = context
        .workspace
        .resolve(Path::new(args.cwd.as_deref().unwrap_or(".")))?;
    let timeout = args
        .timeout_secs
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
        .min(MAX_TIMEOUT);
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
    let result = for_the_model(&describe(&ran, timeout));
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
    let create = CreateTerminalRequest::new(session.clone(), program)
        .args(argv)
        .cwd(cwd)
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
        truncated: output.truncated,
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
            let _ = terminals.release(&id);
            return Err(Stop::Cancelled);
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
        exit: if timed_out { None } else { output.exit },
        timed_out,
        output: output.output,
        truncated: output.truncated,
    })
}

fn from_acp(status: TerminalExitStatus) -> ExitStatus {
    ExitStatus {
        code: status.exit_code,
        signal: status.signal,
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
    let cut = if ran.truncated {
        " (the beginning was cut)"
    } else {
        ""
    };
    if ran.output.is_empty() {
        format!("{ending}; no output")
    } else {
        format!("{ending}; output{cut}:\n{}", ran.output)
    }
}
