//! One WebSocket: every text frame is one JSON-RPC message, handed to an
//! [`AcpConnection`] and answered the same way.
//!
//! The socket ends with a close frame that says why: 1001 when the server is
//! shutting down, 1000 when the conversation simply ended, 1011 when the
//! connection failed, 1009 when the client sent a message over the limit,
//! 1007 when it sent a text frame that is not UTF-8,
//! 1008 when the client stopped reading or went silent (no pong). A client
//! that falls behind never slows anyone else, and costs at most its bounded
//! queue and a bounded number of bytes behind it: each message is written
//! out as text as soon as the connection makes it, so what waits is counted
//! in the bytes the client would read. The socket knows nothing of what the
//! messages mean.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_client_protocol::{Channel, ConnectTo as _, TransportFrame};
use axum::extract::ws::{CloseFrame, Message, WebSocket, close_code};
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender};
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc::error::TrySendError;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_util::sync::CancellationToken;

use crate::acp::{AcpConnection, AgentHub, frame_from_text};
use crate::config::{CLOSE_HANDSHAKE_TIMEOUT, ConnectionLimits};

/// The longest reason a close frame may carry (RFC 6455: 125 bytes of
/// payload, two of them the code).
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// Why the server ended a connection the client did not end.
#[derive(Debug, Clone)]
enum Dropped {
    /// The client sent a message over the limit.
    TooBig { limit: usize },
    /// The client sent a text frame that is not UTF-8.
    NotText,
    /// The client broke the WebSocket protocol (RFC 6455): an unmasked
    /// frame, a reserved bit or opcode, a control frame too long or cut.
    Protocol(String),
    /// The client stopped reading; its queue stayed full.
    NotReading { stall: Duration },
    /// More than this many bytes waited for the client behind its full queue.
    FarBehind { most_bytes: usize },
    /// Nothing arrived, not even a pong, for this long.
    Silent { timeout: Duration },
}

impl Dropped {
    fn close_frame(&self) -> CloseFrame {
        let (code, reason) = match self {
            Self::TooBig { limit } => (
                close_code::SIZE,
                format!("message too big: the limit is {limit} bytes (--max-message-bytes)"),
            ),
            Self::NotText => (
                close_code::INVALID,
                "a text or close frame that is not valid UTF-8".to_owned(),
            ),
            Self::Protocol(what) => (close_code::PROTOCOL, what.clone()),
            Self::NotReading { stall } => (
                close_code::POLICY,
                format!("the client stopped reading for {stall:?}"),
            ),
            Self::FarBehind { most_bytes } => (
                close_code::POLICY,
                format!("the client stopped reading: over {most_bytes} bytes waited for it"),
            ),
            Self::Silent { timeout } => (
                close_code::POLICY,
                format!("no pong or message for {timeout:?}"),
            ),
        };
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }
}

/// Serve ACP on `socket` until either side closes it, or the client breaks
/// one of `limits`. Three loops share the socket: one reads the client's
/// frames into the connection, one queues the connection's frames for the
/// client, one writes them out, pings, and closes the socket at the end.
pub(super) async fn serve(socket: WebSocket, hub: Arc<AgentHub>, limits: &ConnectionLimits) {
    let (socket_end, connection_end) = Channel::duplex();
    let (from_connection, to_connection) = socket_end.into_parts();
    let connection = tokio::spawn(AcpConnection::new(hub.clone()).connect_to(connection_end));
    let (outgoing, incoming) = socket.split();
    let (close_sent, close_sent_rx) = tokio::sync::oneshot::channel::<()>();
    let verdict = Verdict::default();
    let liveness = Liveness {
        last_heard: Mutex::new(Instant::now()),
        pong_timeout: limits.pong_timeout,
        verdict: &verdict,
    };
    // The messages are boxed because the channel allocates its slots 32 at
    // a time and keeps spare blocks once a burst has needed them: with
    // larger values in the slots, every connection's queue grew by a few KiB
    // over its first turns.
    let (queue, queued) = tokio::sync::mpsc::channel::<Box<Message>>(limits.outgoing_queue);
    let reading = read_frames(
        incoming,
        to_connection,
        close_sent_rx,
        limits.max_message_bytes,
        &liveness,
    );
    let behind = Behind::new(limits.outgoing_stall, limits.outgoing_bytes);
    let queuing = queue_frames(from_connection, queue, behind, &verdict);
    let writing = async {
        // The queue stays open until the close frame is sent: closed
        // earlier, it would fail the connection's next message, which
        // should instead wait out the stall like any other.
        let (mut outgoing, _queued) =
            write_frames(outgoing, queued, limits.ping_interval, &liveness).await;
        let ended = connection.await;
        // Read once the connection has ended: a drop decided meanwhile (a
        // message over the limit, say) is the one the close frame gives.
        let frame = match verdict.why() {
            Some(why) => why.close_frame(),
            None => close_frame(hub.shutdown.is_cancelled(), ended),
        };
        close_socket(&mut outgoing, frame).await;
        let _ = close_sent.send(());
    };
    futures::join!(reading, queuing, writing);
}

/// The server's decision to drop the client, taken once: the first reason
/// is the one the close frame gives, and reading, queuing and writing all
/// stop at once.
#[derive(Default)]
struct Verdict {
    why: Mutex<Option<Dropped>>,
    given: CancellationToken,
}

impl Verdict {
    fn drop_client(&self, why: Dropped) {
        let mut first = lock(&self.why);
        if first.is_none() {
            tracing::info!("dropping a client: {}", why.close_frame().reason);
            *first = Some(why);
            self.given.cancel();
        }
    }

    fn why(&self) -> Option<Dropped> {
        lock(&self.why).clone()
    }

    fn given(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.given.cancelled()
    }
}

/// When the client was last heard from, and how long it may stay silent.
struct Liveness<'a> {
    last_heard: Mutex<Instant>,
    pong_timeout: Duration,
    verdict: &'a Verdict,
}

impl Liveness<'_> {
    fn heard(&self) {
        *lock(&self.last_heard) = Instant::now();
    }

    /// Called when the silence timer fires: anything heard since moves the
    /// timer on; else the client is dropped and this answers false.
    fn still_heard(&self, silence: std::pin::Pin<&mut tokio::time::Sleep>) -> bool {
        let deadline = tokio::time::Instant::from_std(*lock(&self.last_heard)) + self.pong_timeout;
        if deadline <= tokio::time::Instant::now() {
            self.verdict.drop_client(Dropped::Silent {
                timeout: self.pong_timeout,
            });
            return false;
        }
        silence.reset(deadline);
        true
    }
}

/// The client's frames into the connection, until the client closes, breaks
/// a limit, or has had its chance to answer our close frame. Dropping
/// `to_connection` at the end tells the connection the client is gone.
async fn read_frames(
    mut incoming: SplitStream<WebSocket>,
    to_connection: UnboundedSender<TransportFrame>,
    close_sent: tokio::sync::oneshot::Receiver<()>,
    max_message_bytes: usize,
    liveness: &Liveness<'_>,
) {
    // After our close frame, wait a little for the client's answer, no longer.
    let mut handshake_over = std::pin::pin!(async move {
        let _ = close_sent.await;
        tokio::time::sleep(CLOSE_HANDSHAKE_TIMEOUT).await;
    });
    loop {
        let message = tokio::select! {
            message = incoming.next() => message,
            () = &mut handshake_over => break,
            () = liveness.verdict.given() => break,
        };
        liveness.heard();
        match message {
            Some(Ok(Message::Text(text))) => {
                let parsed =
                    super::parse_message(text.len(), text, |text| frame_from_text(text.as_str()));
                let Some(frame) = parsed.await else { break };
                // Once the connection stops taking input the frame has no
                // one to go to; the close frame follows shortly.
                let _ = to_connection.unbounded_send(frame);
            }
            Some(Ok(Message::Binary(_))) => {
                tracing::warn!("ignored a binary frame: ACP messages are text frames");
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Close(_))) | None => break,
            Some(Err(error)) => {
                if let Some(why) = read_failure(error, max_message_bytes) {
                    liveness.verdict.drop_client(why);
                }
                break;
            }
        }
    }
}

/// The connection's frames, as text, into the client's bounded queue. A
/// client that stays behind with the queue full for the stall, or with more
/// bytes waiting behind it than allowed, is dropped. Dropping `queue` at the
/// end lets the writer finish.
async fn queue_frames(
    mut from_connection: UnboundedReceiver<TransportFrame>,
    queue: tokio::sync::mpsc::Sender<Box<Message>>,
    mut behind: Behind,
    verdict: &Verdict,
) {
    // Frames are taken from the connection as fast as it makes them, also
    // while the queue is full: left in the connection's own channel, which
    // has no bound, they would cost several times their size there.
    let mut open = true;
    loop {
        let frame = if behind.is_empty() {
            // Not behind: the queue has room, and only the next frame counts.
            if !open {
                return;
            }
            from_connection.next().await
        } else {
            tokio::select! {
                frame = from_connection.next(), if open => frame,
                room = queue.reserve() => {
                    match room {
                        Ok(room) => behind.hand_over(room, &queue),
                        // The writer is gone; the connection is told by the reader.
                        Err(_) => return,
                    }
                    continue;
                }
                () = tokio::time::sleep_until(behind.deadline) => {
                    verdict.drop_client(Dropped::NotReading { stall: behind.stall });
                    return;
                }
                () = verdict.given() => return,
            }
        };
        let Some(frame) = frame else {
            open = false;
            continue;
        };
        if let Err(why) = behind.queue_or_keep(&queue, frame) {
            verdict.drop_client(why);
            return;
        }
    }
}

/// What waits for a client behind its full queue, and until when it may.
struct Behind {
    waiting: std::collections::VecDeque<Box<Message>>,
    bytes: usize,
    most_bytes: usize,
    stall: Duration,
    /// The stall from when the client fell behind: the queue was found
    /// full, and the messages made for it since have kept coming faster
    /// than it took them. Room made now and then does not count: a client
    /// reading a message now and then would stay behind for ever.
    deadline: tokio::time::Instant,
}

impl Behind {
    fn new(stall: Duration, most_bytes: usize) -> Self {
        Self {
            waiting: std::collections::VecDeque::new(),
            bytes: 0,
            most_bytes,
            stall,
            deadline: tokio::time::Instant::now(),
        }
    }

    fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Queue `frame` as text, or keep it behind the others waiting; an
    /// error when that is more than the client may be behind.
    fn queue_or_keep(
        &mut self,
        queue: &tokio::sync::mpsc::Sender<Box<Message>>,
        frame: TransportFrame,
    ) -> Result<(), Dropped> {
        let Some(message) = frame_message(frame) else {
            return Ok(());
        };
        let message = Box::new(message);
        let message = if self.is_empty() {
            match queue.try_send(message) {
                // A closed queue: the writer is gone, and the reader tells
                // the connection.
                Ok(()) | Err(TrySendError::Closed(_)) => return Ok(()),
                Err(TrySendError::Full(message)) => {
                    self.deadline = tokio::time::Instant::now() + self.stall;
                    message
                }
            }
        } else {
            message
        };
        self.bytes += message_bytes(&message);
        self.waiting.push_back(message);
        if self.bytes > self.most_bytes {
            return Err(Dropped::FarBehind {
                most_bytes: self.most_bytes,
            });
        }
        Ok(())
    }

    /// Move what waits into the queue, as far as there is room.
    fn hand_over(
        &mut self,
        room: tokio::sync::mpsc::Permit<'_, Box<Message>>,
        queue: &tokio::sync::mpsc::Sender<Box<Message>>,
    ) {
        if let Some(first) = self.waiting.pop_front() {
            self.bytes -= message_bytes(&first);
            room.send(first);
        }
        while let Some(message) = self.waiting.pop_front() {
            let size = message_bytes(&message);
            match queue.try_send(message) {
                Ok(()) => self.bytes -= size,
                Err(TrySendError::Full(message) | TrySendError::Closed(message)) => {
                    self.waiting.push_front(message);
                    return;
                }
            }
        }
    }
}

/// The bytes the client would read of `message`.
fn message_bytes(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(_) => 0,
    }
}

/// Queued frames out to the client, with a ping every `ping_interval`, until
/// the queue ends, a write fails, or the client is dropped. Hands the socket
/// back for its close frame, and the queue to be kept open until then.
async fn write_frames(
    mut outgoing: SplitSink<WebSocket, Message>,
    mut queued: tokio::sync::mpsc::Receiver<Box<Message>>,
    ping_interval: Duration,
    liveness: &Liveness<'_>,
) -> (
    SplitSink<WebSocket, Message>,
    tokio::sync::mpsc::Receiver<Box<Message>>,
) {
    let dropped = liveness.verdict;
    let mut pings =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let silence = tokio::time::sleep(liveness.pong_timeout);
    tokio::pin!(silence);
    loop {
        // A write to a client that does not read blocks; dropping it must
        // not wait for that write.
        let written = tokio::select! {
            frame = queued.recv() => match frame {
                Some(frame) => {
                    let burst = write_burst(&mut outgoing, frame, &mut queued);
                    tokio::pin!(burst);
                    // A client that neither reads nor sends leaves this
                    // write pending with nothing queued behind it: no ping
                    // goes out and the queue never fills, so its silence is
                    // judged here too.
                    loop {
                        tokio::select! {
                            written = &mut burst => break written,
                            () = &mut silence => if !liveness.still_heard(silence.as_mut()) {
                                break false;
                            },
                            () = dropped.given() => break false,
                        }
                    }
                }
                None => break,
            },
            _ = pings.tick() => tokio::select! {
                sent = outgoing.send(Message::Ping(Default::default())) => sent.is_ok(),
                () = dropped.given() => break,
            },
            () = &mut silence => {
                if !liveness.still_heard(silence.as_mut()) {
                    break;
                }
                true
            }
            () = dropped.given() => break,
        };
        if !written {
            break;
        }
    }
    (outgoing, queued)
}

/// Send the close frame. When the client closed first, the WebSocket has
/// already queued its answer and refuses ours; flushing still delivers the
/// queued one. When the client is gone, neither matters — and a client that
/// does not read gets no longer than the close handshake.
async fn close_socket(outgoing: &mut SplitSink<WebSocket, Message>, frame: CloseFrame) {
    let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
        if outgoing.send(Message::Close(Some(frame))).await.is_err() {
            let _ = outgoing.flush().await;
        }
    })
    .await;
}

/// Write `first` and every message already waiting after it, then flush:
/// messages come in bursts (a turn's updates, then its answer). False if the
/// socket failed.
async fn write_burst(
    outgoing: &mut SplitSink<WebSocket, Message>,
    first: Box<Message>,
    queued: &mut tokio::sync::mpsc::Receiver<Box<Message>>,
) -> bool {
    let mut next = Some(first);
    while let Some(message) = next {
        if outgoing.feed(*message).await.is_err() {
            return false;
        }
        next = queued.try_recv().ok();
    }
    outgoing.flush().await.is_ok()
}

/// Why a read failed, when it was the client's doing and the close frame
/// should say so.
fn read_failure(error: axum::Error, max_message_bytes: usize) -> Option<Dropped> {
    let error = error.into_inner();
    match error.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some(Dropped::TooBig {
            limit: max_message_bytes,
        }),
        Some(tungstenite::Error::Utf8(_)) => Some(Dropped::NotText),
        // The client went away without a close frame: nothing it sent broke
        // the protocol, and nobody is left to read a close frame.
        Some(tungstenite::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake
            | ProtocolError::SendAfterClosing
            | ProtocolError::ReceivedAfterClosing,
        )) => {
            tracing::debug!("the client went away without closing");
            None
        }
        Some(tungstenite::Error::Protocol(error)) => {
            // A close frame's reason holds at most 123 bytes.
            let what = format!("WebSocket protocol error: {error}");
            let end = what.floor_char_boundary(MAX_CLOSE_REASON_BYTES);
            Some(Dropped::Protocol(what[..end].to_owned()))
        }
        _ => {
            tracing::debug!("WebSocket read failed: {error}");
            None
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The WebSocket message carrying `frame`. The SDK built the frame itself, so
/// it always serialises; were it ever not to, it is logged and skipped.
fn frame_message(frame: TransportFrame) -> Option<Message> {
    match frame.to_json() {
        Ok(text) => Some(Message::Text(text.into())),
        Err(error) => {
            tracing::error!("cannot serialize an outgoing message: {error}");
            None
        }
    }
}

/// The close frame for a connection the client ended, or that ended on its
/// own (`ended` is how the connection's task finished).
fn close_frame(
    shutting_down: bool,
    ended: Result<Result<(), agent_client_protocol::Error>, tokio::task::JoinError>,
) -> CloseFrame {
    let ended = match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    };
    let (code, reason) = match ended {
        Err(error) => {
            tracing::warn!("connection failed: {error}");
            (close_code::ERROR, "internal error")
        }
        Ok(()) if shutting_down => (close_code::AWAY, "server shutting down"),
        Ok(()) => (close_code::NORMAL, ""),
    };
    CloseFrame {
        code,
        reason: reason.into(),
    }
}
