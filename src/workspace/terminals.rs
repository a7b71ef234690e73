//! Commands run inside a workspace, each with its output kept (up to a limit,
//! the oldest bytes dropped first) until it is released.
//!
//! Each command leads a process group of its own, and stopping it (a kill, a
//! release, dropping the [`Terminals`]) kills the whole group: what the
//! command started — a shell's background jobs, `make`'s compilers — goes
//! with it. A command also dies with the process that started it, however
//! that one ends (`kill -9` included).
//!
//! A command ends when its own process exits, not when its output closes:
//! what it left running in the background (`server &`) may hold the output
//! open for ever. Its output is read for [`OUTPUT_GRACE`] more, then the
//! rest of its group is killed, as a kill would: nothing it started goes on
//! unseen, writing to an output nobody reads. Its [`ExitStatus`] says
//! whether anything was left to stop.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio::net::unix::pipe;
use tokio::process::Child;
use tokio::sync::{Notify, watch};

use super::{Workspace, WorkspaceError};

/// Output kept per command when the caller sets no limit.
pub const DEFAULT_OUTPUT_LIMIT: usize = 1024 * 1024;

/// How long output is still read once a command has exited while something
/// it started holds the output open: long enough for what was written just
/// before the exit, short enough that the caller hardly waits.
pub const OUTPUT_GRACE: Duration = Duration::from_millis(250);

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExitStatus {
    pub code: Option<u32>,
    pub signal: Option<String>,
    /// It exited leaving processes of its group running, which were
    /// killed.
    pub stopped_background: bool,
}

/// What a command has printed so far, and whether it has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TerminalOutput {
    pub output: String,
    /// How many bytes of earlier output were dropped to stay within the
    /// limit.
    pub dropped: usize,
    pub exit: Option<ExitStatus>,
}

#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    #[error("no terminal `{0}`; it was never created or has been released")]
    Unknown(String),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("cannot make a pipe for a command's output: {0}")]
    Pipe(std::io::Error),
    /// The directory to run in is missing or not a directory: said as such,
    /// since the spawn's own error would blame the program.
    #[error("cannot run in `{}`: {problem}", cwd.display())]
    Cwd { cwd: PathBuf, problem: String },
}

/// The commands one client or session has running or finished.
#[derive(Default)]
pub struct Terminals {
    running: Mutex<HashMap<String, Arc<Terminal>>>,
}

struct Terminal {
    output: Mutex<Output>,
    exit: watch::Receiver<Option<ExitStatus>>,
    kill: Notify,
}

struct Output {
    bytes: Vec<u8>,
    limit: usize,
    /// Bytes dropped from the start to stay within `limit`.
    dropped: usize,
}

impl Output {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend_from_slice(data);
        if self.bytes.len() > self.limit {
            let excess = self.bytes.len() - self.limit;
            self.bytes.drain(..excess);
            self.dropped += excess;
        }
    }

    /// The text kept, and how many bytes before it are gone.
    fn text(&self) -> (String, usize) {
        // The cut may have split a character; start at the next whole one.
        let start = if self.dropped == 0 {
            0
        } else {
            self.bytes
                .iter()
                .position(|byte| byte & 0b1100_0000 != 0b1000_0000)
                .unwrap_or(self.bytes.len())
        };
        let text = String::from_utf8_lossy(&self.bytes[start..]).into_owned();
        (text, self.dropped + start)
    }
}

impl Terminals {
    /// Check that `cwd`, a real path inside `workspace`, is a directory a
    /// command can run in.
    pub fn check_cwd(workspace: &Workspace, cwd: &Path) -> Result<(), TerminalError> {
        let problem = match std::fs::metadata(cwd) {
            Ok(metadata) if metadata.is_dir() => return Ok(()),
            Ok(_) => "it is not a directory".to_owned(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                "no such directory".to_owned()
            }
            Err(error) => error.to_string(),
        };
        Err(TerminalError::Cwd {
            cwd: workspace.as_named(cwd),
            problem,
        })
    }

    /// Start `command` with `args` in `cwd` (the workspace root when `None`).
    pub fn create(
        &self,
        workspace: &Workspace,
        command: &str,
        args: &[String],
        env: &[(String, String)],
        cwd: Option<&Path>,
        output_limit: Option<usize>,
    ) -> Result<String, TerminalError> {
        let cwd = match cwd {
            Some(cwd) => workspace.resolve(cwd)?,
            None => workspace.root().to_owned(),
        };
        Self::check_cwd(workspace, &cwd)?;
        // One pipe for stdout and stderr, as on a terminal: what the command
        // writes stays in the order it wrote it, whichever stream it used.
        let (output_pipe, writer) = std::io::pipe().map_err(TerminalError::Pipe)?;
        let mut child = tokio::process::Command::new(command);
        die_with_this_process(&mut child);
        without_a_terminal(&mut child);
        let child = child
            .args(args)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .current_dir(&cwd)
            .stdin(Stdio::null())
            .stdout(writer.try_clone().map_err(TerminalError::Pipe)?)
            .stderr(writer)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TerminalError::Spawn {
                command: command.to_owned(),
                source,
            })?;
        let (exit_tx, exit) = watch::channel(None);
        let terminal = Arc::new(Terminal {
            output: Mutex::new(Output {
                bytes: Vec::new(),
                limit: output_limit.unwrap_or(DEFAULT_OUTPUT_LIMIT),
                dropped: 0,
            }),
            exit,
            kill: Notify::new(),
        });
        // The command's copies of the pipe's writing end are its own now
        // (the builder that held ours is gone), so the output ends when it
        // and whatever it started have closed theirs.
        let output_pipe = pipe::Receiver::from_owned_fd(OwnedFd::from(output_pipe))
            .map_err(TerminalError::Pipe)?;
        let mut running = Running::new(child).map_err(|source| TerminalError::Spawn {
            command: command.to_owned(),
            source,
        })?;
        let watched = terminal.clone();
        tokio::spawn(async move {
            let ended = async {
                let mut capture = std::pin::pin!(capture(output_pipe, &watched.output));
                tokio::select! {
                    () = &mut capture => running.exited().await,
                    () = running.exited() => {
                        // Whatever it started may keep the output open: take
                        // what comes soon, not wait for an end that may never
                        // come.
                        let _ = tokio::time::timeout(OUTPUT_GRACE, capture).await;
                    }
                }
            };
            let (status, stopped_background) = tokio::select! {
                () = ended => {
                    let stopped = running.stop_the_rest().await;
                    (running.wait().await, stopped)
                }
                () = watched.kill.notified() => {
                    running.kill();
                    (running.wait().await, false)
                }
            };
            let exit = match status {
                Ok(status) => ExitStatus {
                    code: status.code().and_then(|code| u32::try_from(code).ok()),
                    signal: status.signal().map(signal_name),
                    stopped_background,
                },
                Err(error) => {
                    tracing::warn!("cannot tell how a command ended: {error}");
                    ExitStatus::default()
                }
            };
            exit_tx.send_replace(Some(exit));
        });
        let id = uuid::Uuid::new_v4().to_string();
        self.lock().insert(id.clone(), terminal);
        Ok(id)
    }

    /// The output so far, and the exit status once the command has ended.
    pub fn output(&self, id: &str) -> Result<TerminalOutput, TerminalError> {
        let terminal = self.get(id)?;
        let (output, dropped) = lock(&terminal.output).text();
        Ok(TerminalOutput {
            output,
            dropped,
            exit: terminal.exit.borrow().clone(),
        })
    }

    /// Wait for the command to end.
    pub async fn wait(&self, id: &str) -> Result<ExitStatus, TerminalError> {
        let mut exit = self.get(id)?.exit.clone();
        let ended = exit
            .wait_for(Option::is_some)
            .await
            .map(|status| status.clone().unwrap_or_default());
        Ok(ended.unwrap_or_default())
    }

    /// Stop the command; its output stays until it is released.
    pub fn kill(&self, id: &str) -> Result<(), TerminalError> {
        self.get(id)?.kill.notify_one();
        Ok(())
    }

    /// Stop the command if it still runs, and forget it.
    pub fn release(&self, id: &str) -> Result<(), TerminalError> {
        let terminal = self
            .lock()
            .remove(id)
            .ok_or_else(|| TerminalError::Unknown(id.to_owned()))?;
        terminal.kill.notify_one();
        Ok(())
    }

    /// Stop every command and forget them all.
    pub fn release_all(&self) {
        for (_, terminal) in self.lock().drain() {
            terminal.kill.notify_one();
        }
    }

    fn get(&self, id: &str) -> Result<Arc<Terminal>, TerminalError> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| TerminalError::Unknown(id.to_owned()))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Terminal>>> {
        lock(&self.running)
    }
}

impl Drop for Terminals {
    fn drop(&mut self) {
        self.release_all();
    }
}

/// In a command's process, before it runs: be killed when the process that
/// started it dies, even by `kill -9`, when nothing is left to kill the
/// group. (Only that process — for a shell line, the shell: what it starts
/// lives on, unless it is killed with the group first.) Linux sends the
/// signal when the *thread* that started it ends: commands are started from
/// the runtime's worker threads, which live as long as the server.
pub fn die_with_this_process(command: &mut tokio::process::Command) {
    let parent = rustix::process::getpid();
    // SAFETY: between fork and exec the closure makes only system calls
    // (prctl, getppid), which are async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || die_with(parent));
    }
}

/// Start `command` in a session of its own, with no controlling terminal:
/// what it writes to `/dev/tty` would otherwise reach the person's terminal
/// past every check on what is shown there (`punie ask` runs commands for
/// the model), and what reads from it would wait, stopped, until its
/// timeout. The session's one process group is the command's, so the group
/// is still killed as one.
fn without_a_terminal(command: &mut tokio::process::Command) {
    // SAFETY: setsid is async-signal-safe and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            rustix::process::setsid()?;
            Ok(())
        });
    }
}

fn die_with(parent: Pid) -> std::io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
    // The parent may have died before the signal was asked for. (No
    // allocation between fork and exec: a bare errno.)
    if rustix::process::getppid() != Some(parent) {
        return Err(rustix::io::Errno::SRCH.into());
    }
    Ok(())
}

/// A command that has not been reaped, and the process group it leads.
/// Dropped before then (its task dropped with the runtime, say), it kills
/// the group.
struct Running {
    child: Child,
    group: Pid,
    /// Readable once the command has exited; unlike a wait, it leaves the
    /// command unreaped, so the group's id stays its own.
    pidfd: AsyncFd<OwnedFd>,
    reaped: bool,
}

impl Running {
    /// Fails, the group killed, when the command cannot be watched.
    fn new(child: Child) -> std::io::Result<Self> {
        let group = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .and_then(Pid::from_raw)
            .ok_or(std::io::ErrorKind::NotFound)?;
        let pidfd = rustix::process::pidfd_open(group, rustix::process::PidfdFlags::empty())
            .map_err(std::io::Error::from)
            .and_then(|pidfd| {
                // SAFETY: the AsyncFd owns the pidfd and nothing else closes it.
                unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
                    .map_err(std::io::Error::from)
            });
        match pidfd {
            Ok(pidfd) => Ok(Self {
                child,
                group,
                pidfd,
                reaped: false,
            }),
            Err(error) => {
                // The child is killed as it is dropped; what it started is not.
                let _ = rustix::process::kill_process_group(group, Signal::KILL);
                Err(error)
            }
        }
    }

    /// Kill the command and everything in its group. Only before the
    /// command is reaped: until then its pid, which is the group's id,
    /// cannot name another group.
    fn kill(&mut self) {
        if self.reaped {
            return;
        }
        let _ = rustix::process::kill_process_group(self.group, Signal::KILL);
        let _ = self.child.start_kill();
    }

    /// Wait until the command has exited, leaving it to be reaped.
    async fn exited(&self) {
        // An error would mean the runtime is going away, which drops this.
        let _ = self.pidfd.readable().await;
    }

    /// Once the command has exited: kill what it left in its group, and say
    /// whether anything was.
    async fn stop_the_rest(&mut self) -> bool {
        let group = self.group;
        let left = tokio::task::spawn_blocking(move || others_in_group(group))
            .await
            .unwrap_or(false);
        self.kill();
        left
    }

    async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        let status = self.child.wait().await;
        self.reaped = status.is_ok();
        status
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a live process other than its leader is in `group`.
fn others_in_group(group: Pid) -> bool {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    let group = group.as_raw_nonzero().get();
    processes.flatten().any(|process| {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            return false;
        };
        if pid == group {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(process.path().join("stat")) else {
            return false;
        };
        // After the name in parentheses, which may hold anything: the
        // state, the parent, the group. An exited one waits only to be
        // reaped.
        let mut fields = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace())
            .into_iter()
            .flatten();
        let state = fields.next();
        let in_group = fields.nth(1).and_then(|g| g.parse::<i32>().ok()) == Some(group);
        in_group && state != Some("Z")
    })
}

async fn capture(mut stream: impl AsyncRead + Unpin, output: &Mutex<Output>) {
    let mut buffer = vec![0u8; 8192];
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        lock(output).push(&buffer[..read]);
    }
}

/// The usual names of the signals a command is likely to die of.
const SIGNAL_NAMES: [(Signal, &str); 14] = [
    (Signal::HUP, "SIGHUP"),
    (Signal::INT, "SIGINT"),
    (Signal::QUIT, "SIGQUIT"),
    (Signal::ILL, "SIGILL"),
    (Signal::TRAP, "SIGTRAP"),
    (Signal::ABORT, "SIGABRT"),
    (Signal::BUS, "SIGBUS"),
    (Signal::FPE, "SIGFPE"),
    (Signal::KILL, "SIGKILL"),
    (Signal::SEGV, "SIGSEGV"),
    (Signal::PIPE, "SIGPIPE"),
    (Signal::ALARM, "SIGALRM"),
    (Signal::TERM, "SIGTERM"),
    (Signal::XCPU, "SIGXCPU"),
];

/// A signal as people write it (`SIGKILL`), or its number when it has no
/// usual name.
fn signal_name(signal: i32) -> String {
    SIGNAL_NAMES
        .iter()
        .find(|(known, _)| known.as_raw() == signal)
        .map_or_else(
            || format!("signal {signal}"),
            |(_, name)| (*name).to_owned(),
        )
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Start `script` with `sh -c` in `workspace`; its terminal's id.
    fn shell(terminals: &Terminals, workspace: &Workspace, script: &str) -> String {
        let args = ["-c".to_owned(), script.to_owned()];
        terminals
            .create(workspace, "sh", &args, &[], None, None)
            .unwrap()
    }

    #[test]
    fn output_beyond_the_limit_drops_the_oldest_bytes_at_a_character_boundary() {
        let mut output = Output {
            bytes: Vec::new(),
            limit: 5,
            dropped: 0,
        };
        output.push("ab".as_bytes());
        assert_eq!(output.text(), ("ab".to_owned(), 0));
        output.push("cdé!".as_bytes()); // 'é' is two bytes
        assert_eq!(output.text(), ("cdé!".to_owned(), 2));
        output.push("xyz".as_bytes());
        // Half of 'é' is kept but not shown: it counts as dropped.
        assert_eq!(output.text(), ("!xyz".to_owned(), 6));
    }

    #[tokio::test]
    async fn a_command_runs_in_the_workspace_and_reports_how_it_ended() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace::new(dir.path()).unwrap();
        let terminals = Terminals::default();
        let id = shell(&terminals, &workspace, "pwd; echo oops >&2; exit 3");
        let exit = terminals.wait(&id).await.unwrap();
        assert_eq!(exit.code, Some(3));
        assert!(!exit.stopped_background);
        let output = terminals.output(&id).unwrap();
        assert!(output.output.contains(workspace.root().to_str().unwrap()));
        assert!(output.output.contains("oops"));
        terminals.release(&id).unwrap();
        assert!(terminals.output(&id).is_err());
    }

    #[tokio::test]
    async fn a_command_leads_a_session_of_its_own_with_no_terminal() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace::new(dir.path()).unwrap();
        let terminals = Terminals::default();
        // The shell's pid, then its process group and session (fields 5
        // and 6 of its stat), then whether it has a terminal to open.
        let script = "echo $$ $(cut -d' ' -f5,6 /proc/$$/stat); \
                      (: </dev/tty) 2>/dev/null && echo terminal || echo none";
        let id = shell(&terminals, &workspace, script);
        terminals.wait(&id).await.unwrap();
        let output = terminals.output(&id).unwrap().output;
        let mut lines = output.lines();
        let ids: Vec<&str> = lines.next().unwrap().split(' ').collect();
        assert_eq!(ids, [ids[0]; 3], "pid, group and session: {output}");
        assert_eq!(lines.next(), Some("none"), "{output}");
    }

    #[tokio::test]
    async fn output_keeps_the_order_it_was_written_in_across_stdout_and_stderr() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace::new(dir.path()).unwrap();
        let terminals = Terminals::default();
        let script = "for i in 1 2 3 4 5 6 7 8 9; do echo out$i; echo err$i >&2; done";
        let id = shell(&terminals, &workspace, script);
        terminals.wait(&id).await.unwrap();
        let expected: String = (1..=9).map(|i| format!("out{i}\nerr{i}\n")).collect();
        assert_eq!(terminals.output(&id).unwrap().output, expected);
    }

    #[tokio::test]
    async fn a_killed_command_ends_with_its_signal() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace::new(dir.path()).unwrap();
        let terminals = Terminals::default();
        let id = terminals
            .create(&workspace, "sleep", &["30".into()], &[], None, None)
            .unwrap();
        terminals.kill(&id).unwrap();
        let exit = terminals.wait(&id).await.unwrap();
        assert_eq!(exit.code, None);
        assert_eq!(exit.signal.as_deref(), Some("SIGKILL"));
    }

    #[tokio::test]
    async fn dropping_the_terminals_kills_what_their_commands_started() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace::new(dir.path()).unwrap();
        let terminals = Terminals::default();
        let script = "sleep 30 & echo $!; wait";
        let id = shell(&terminals, &workspace, script);
        let deadline = std::time::Duration::from_secs(20);
        let job = tokio::time::timeout(deadline, async {
            loop {
                let output = terminals.output(&id).unwrap().output;
                if let Some(line) = output.strip_suffix('\n') {
                    return line.parse::<i32>().unwrap();
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the shell prints its job's pid");
        let job = rustix::process::pidfd_open(
            Pid::from_raw(job).unwrap(),
            rustix::process::PidfdFlags::empty(),
        )
        .expect("the job runs");
        drop(terminals);
        // Readable once the job has exited, reaped or not.
        // SAFETY: the AsyncFd owns the pidfd and nothing else closes it.
        let job = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(job, tokio::io::Interest::READABLE)
        }
        .unwrap();
        let _exited = tokio::time::timeout(deadline, job.readable())
            .await
            .expect("the job is killed")
            .unwrap();
    }

    #[tokio::test]
    async fn a_job_left_behind_with_its_output_elsewhere_is_stopped_as_the_command_exits() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace::new(dir.path()).unwrap();
        let terminals = Terminals::default();
        let id = shell(&terminals, &workspace, "sleep 30 >/dev/null 2>&1 & echo $!");
        let deadline = std::time::Duration::from_secs(20);
        let exit = tokio::time::timeout(deadline, terminals.wait(&id))
            .await
            .expect("the command ends with its shell")
            .unwrap();
        assert_eq!((exit.code, exit.stopped_background), (Some(0), true));
        let output = terminals.output(&id).unwrap().output;
        let job = Pid::from_raw(output.trim().parse().unwrap()).unwrap();
        // Gone already, or readable once it has exited.
        if let Ok(job) = rustix::process::pidfd_open(job, rustix::process::PidfdFlags::empty()) {
            // SAFETY: the AsyncFd owns the pidfd and nothing else closes it.
            let job = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(job, tokio::io::Interest::READABLE)
            }
            .unwrap();
            let _exited = tokio::time::timeout(deadline, job.readable())
                .await
                .expect("the job is killed")
                .unwrap();
        }
    }

    #[test]
    fn a_cwd_outside_the_workspace_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let workspace = Workspace::new(dir.path()).unwrap();
        let terminals = Terminals::default();
        let refused = terminals.create(&workspace, "true", &[], &[], Some(Path::new("/")), None);
        assert!(matches!(refused, Err(TerminalError::Workspace(_))));
    }

    #[test]
    fn a_missing_cwd_or_a_file_as_cwd_is_blamed_and_not_the_program() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        let workspace = Workspace::new(dir.path()).unwrap();
        let terminals = Terminals::default();
        for (cwd, problem) in [
            ("nothere", "/nothere`: no such directory"),
            ("notes.txt", "/notes.txt`: it is not a directory"),
        ] {
            let refused = terminals
                .create(&workspace, "true", &[], &[], Some(Path::new(cwd)), None)
                .unwrap_err()
                .to_string();
            assert!(refused.starts_with("cannot run in `"), "{refused}");
            assert!(refused.ends_with(problem), "{refused}");
        }
    }
}
