//! A pseudo-terminal for the clients that behave differently on one: the
//! child runs in a session of its own with the terminal as its controlling
//! terminal, as under a shell, so `/dev/tty` is the terminal and Ctrl-C
//! typed on it reaches the child as SIGINT.

use std::io::{Read as _, Write as _};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::process::{Child, Command};

use super::within;

fn on_terminal(fd: &OwnedFd) -> Stdio {
    Stdio::from(fd.try_clone().expect("a terminal fd"))
}

/// The terminal side a test holds: what the child wrote to the terminal, and
/// a keyboard.
pub struct Terminal {
    keyboard: std::fs::File,
    screen: Arc<Mutex<Vec<u8>>>,
    grew: tokio::sync::watch::Receiver<usize>,
}

impl Terminal {
    /// Start `command` with its stdin and stderr on a new terminal; stdout
    /// stays a pipe, so the answer can be read apart from the terminal.
    pub fn spawn(mut command: Command) -> (Self, Child) {
        let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
        command
            .stdin(on_terminal(&pty.slave))
            .stderr(on_terminal(&pty.slave))
            .stdout(Stdio::piped());
        Self::start(command, pty)
    }

    /// Start `command` with only its stdout on a new terminal, as when a
    /// person runs it by hand with its input piped in; stdin and stderr are
    /// whatever `command` says.
    pub fn spawn_writing_to_it(mut command: Command) -> (Self, Child) {
        let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
        command.stdout(on_terminal(&pty.slave));
        Self::start(command, pty)
    }

    fn start(mut command: Command, pty: nix::pty::OpenptyResult) -> (Self, Child) {
        // SAFETY: setsid and ioctl are async-signal-safe and touch no memory
        // of the parent.
        unsafe {
            command.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                // Make the terminal the controlling one, through whichever
                // of the standard streams is on it.
                let on_it = (0..3).find(|&fd| nix::libc::isatty(fd) == 1).unwrap_or(0);
                if nix::libc::ioctl(on_it, nix::libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("the child starts on the terminal");
        // Only the child holds the terminal's other side now: when it exits,
        // reading the screen ends.
        drop(command);
        drop(pty.slave);
        let keyboard = std::fs::File::from(pty.master);
        let mut reader = keyboard.try_clone().expect("the terminal can be read");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let (grew_tx, grew) = tokio::sync::watch::channel(0);
        let shown = screen.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // Ends with EIO once no process has the terminal open.
            while let Ok(read) = reader.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                let length = {
                    let mut screen = shown.lock().unwrap();
                    screen.extend_from_slice(&buffer[..read]);
                    screen.len()
                };
                grew_tx.send_replace(length);
            }
        });
        (
            Self {
                keyboard,
                screen,
                grew,
            },
            child,
        )
    }

    /// Everything written to the terminal so far (with what was typed, echoed).
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Wait until the terminal shows `needle`.
    pub async fn wait_for(&mut self, needle: &str) {
        let screen = self.screen.clone();
        within(&format!("`{needle}` on the terminal"), async {
            loop {
                if String::from_utf8_lossy(&screen.lock().unwrap()).contains(needle) {
                    return;
                }
                if self.grew.changed().await.is_err() {
                    panic!(
                        "the terminal closed without showing `{needle}`: {:?}",
                        String::from_utf8_lossy(&screen.lock().unwrap())
                    );
                }
            }
        })
        .await;
    }

    /// Type `keys` on the terminal.
    pub fn type_keys(&mut self, keys: &str) {
        self.keyboard
            .write_all(keys.as_bytes())
            .expect("the terminal takes keys");
    }

    /// Ctrl-C.
    pub fn ctrl_c(&mut self) {
        self.type_keys("\u{3}");
    }

    /// Wait until the terminal closes (every process on it exited), then
    /// return everything it showed.
    pub async fn closed(&mut self) -> String {
        within("the terminal to close", async {
            while self.grew.changed().await.is_ok() {}
        })
        .await;
        self.screen()
    }
}
