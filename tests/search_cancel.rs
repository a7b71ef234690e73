//! A search cancelled while it walks the workspace stops there: it reads its
//! file no further and goes on to no other, rather than running on for a
//! turn that has ended. What the server opens and closes in the workspace
//! is watched with inotify, the kernel's own account of it.

mod support;

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::path::Path;

use rustix::fd::OwnedFd;
use rustix::fs::inotify;
use serde_json::{Value, json};
use support::{Server, within};
use tokio::io::unix::AsyncFd;

fn call(name: &str, arguments: Value) -> Value {
    json!({"tool_call": {"name": name, "arguments": arguments}})
}

/// Files opened and closed in one directory, as inotify reports them.
struct Watch {
    inotify: AsyncFd<OwnedFd>,
    seen: VecDeque<(String, &'static str)>,
}

impl Watch {
    fn new(dir: &Path) -> Self {
        let inotify = inotify::init(inotify::CreateFlags::NONBLOCK | inotify::CreateFlags::CLOEXEC)
            .expect("an inotify instance");
        inotify::add_watch(
            &inotify,
            dir,
            inotify::WatchFlags::OPEN | inotify::WatchFlags::CLOSE_NOWRITE,
        )
        .expect("the directory is watched");
        // SAFETY: the AsyncFd owns the inotify descriptor and nothing else
        // closes it.
        let inotify =
            unsafe { AsyncFd::register_with_interest(inotify, tokio::io::Interest::READABLE) }
                .expect("inotify can be waited on");
        Self {
            inotify,
            seen: VecDeque::new(),
        }
    }

    /// Move the events the kernel holds into `seen`: opened or closed,
    /// and which file. The directory's own (a walk reading it) are left out.
    fn take_pending(&mut self) {
        let mut buffer = [MaybeUninit::uninit(); 4096];
        let mut reader = inotify::Reader::new(self.inotify.get_ref(), &mut buffer);
        loop {
            match reader.next() {
                Ok(event) => {
                    let Some(name) = event.file_name() else {
                        continue;
                    };
                    let what = if event.events().contains(inotify::ReadFlags::OPEN) {
                        "opened"
                    } else {
                        "closed"
                    };
                    self.seen
                        .push_back((name.to_string_lossy().into_owned(), what));
                }
                Err(rustix::io::Errno::AGAIN) => return,
                Err(error) => panic!("inotify could not be read: {error}"),
            }
        }
    }

    /// The next file event, once there is one.
    async fn next(&mut self, what: &str) -> (String, &'static str) {
        within(what, async {
            loop {
                self.take_pending();
                if let Some(event) = self.seen.pop_front() {
                    return event;
                }
                let mut ready = self
                    .inotify
                    .readable()
                    .await
                    .expect("inotify can be waited on");
                ready.clear_ready();
            }
        })
        .await
    }

    /// Every file event so far not taken.
    fn rest(&mut self) -> Vec<(String, &'static str)> {
        self.take_pending();
        self.seen.drain(..).collect()
    }
}

fn event(name: &str, what: &'static str) -> (String, &'static str) {
    (name.to_owned(), what)
}

/// A pattern searched slowly: a Unicode word boundary in text that is not
/// ASCII leaves the regex engine none of its fast paths, and nothing in it
/// is a literal to skip ahead to.
const SLOW_PATTERN: &str = r"\b\w{3}\b\s\b\w{24}\b";

/// A search of a file that takes far longer than the test's deadline is
/// cancelled: the server closes the file at once, goes on to no other file
/// of the walk, and the next prompt's search of that other file is the
/// only one to open it.
#[tokio::test]
async fn a_cancelled_search_stops_reading_and_walks_no_further() {
    let server = Server::scripted(
        json!([
            [call("search", json!({"pattern": SLOW_PATTERN}))],
            [call("search", json!({"pattern": "needle", "path": "z-later.txt"}))],
            [{"text": "Found."}]
        ]),
        &[],
    )
    .await;
    let workspace = server.home.workspace();
    // Words of two to seven Cyrillic letters: no match, and no ASCII.
    let line = "дом стол окно книга вода берег солнце\n";
    std::fs::write(
        workspace.join("a-big.txt"),
        line.repeat(256 * 1024 * 1024 / line.len()),
    )
    .unwrap();
    std::fs::write(workspace.join("z-later.txt"), "a needle\n").unwrap();
    let mut watch = Watch::new(&workspace);
    let mut client = server.initialized().await;
    let session = client.new_session(&workspace).await;

    let searching = client.start_prompt(&session, "search").await;
    assert_eq!(
        watch.next("the search to open the big file").await,
        event("a-big.txt", "opened")
    );
    client
        .notify("session/cancel", json!({"sessionId": session}))
        .await;
    let answer = within(
        "the cancelled prompt's answer",
        client.response_to(searching),
    )
    .await;
    assert_eq!(answer["result"]["stopReason"], "cancelled", "{answer}");
    // Read to its end, the file would stay open far past the deadline.
    assert_eq!(
        watch.next("the search to close the big file").await,
        event("a-big.txt", "closed")
    );

    let next = within("the next prompt", client.prompt(&session, "search again")).await;
    assert_eq!(next["result"]["stopReason"], "end_turn", "{next}");
    assert_eq!(client.agent_text(&session), "Found.");
    // The next prompt's search has closed its file before it was
    // answered: every event of both searches is in.
    assert_eq!(
        watch.rest(),
        [
            event("z-later.txt", "opened"),
            event("z-later.txt", "closed")
        ],
        "the cancelled walk opened nothing more"
    );
}
