//! The connections attached to one session: who receives its updates, and
//! which of them answers the requests a turn makes.
//!
//! A connection being caught up by `session/load` is attached before its
//! replay is sent, so it misses nothing; what arrives for it meanwhile waits
//! in its backlog and follows the replay, in order.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use agent_client_protocol::Client;
use agent_client_protocol::v1::ConnectionTo;
use agent_client_protocol::v1::schema::{ClientCapabilities, SessionNotification};
use tokio::sync::Notify;

use super::ConnectionId;

/// One client connection as a session reaches it, through the SDK's handle
/// (never a socket).
#[derive(Clone)]
pub struct ClientHandle {
    pub connection: ConnectionId,
    pub cx: ConnectionTo<Client>,
    pub capabilities: Arc<ClientCapabilities>,
}

struct Attached {
    handle: ClientHandle,
    /// `Some` while the connection's replay is being sent.
    backlog: Option<Vec<SessionNotification>>,
    /// The connection has been answered the request that attached it: it
    /// knows the session, and may be asked things about it.
    ready: bool,
}

impl Attached {
    /// Send `notification` now, or after the replay if one is being sent.
    fn pass(&mut self, notification: SessionNotification) {
        match &mut self.backlog {
            Some(backlog) => backlog.push(notification),
            None => {
                let _ = self.handle.cx.send_notification(notification);
            }
        }
    }
}

#[derive(Default)]
pub struct Attachments {
    attached: Mutex<Vec<Attached>>,
    /// Woken whenever an attached connection becomes ready to be asked.
    arrived: Notify,
}

impl Attachments {
    /// Attach `handle`; with `replaying`, its updates wait until
    /// [`Self::replayed`]. False if it was attached already — then, with
    /// `replaying`, its updates wait all the same: loaded again, it is sent
    /// the history up to here, and what comes after follows it, once.
    pub fn attach(&self, handle: ClientHandle, replaying: bool) -> bool {
        let mut attached = self.lock();
        if let Some(entry) = attached
            .iter_mut()
            .find(|entry| entry.handle.connection == handle.connection)
        {
            if replaying {
                entry.backlog.get_or_insert_with(Vec::new);
                // Asked nothing until answered again: a question would come
                // ahead of the replay of the call it is about.
                entry.ready = false;
            }
            return false;
        }
        attached.push(Attached {
            handle,
            backlog: replaying.then(Vec::new),
            ready: false,
        });
        true
    }

    /// `connection` has been answered the request that attached it (and
    /// sent its replay): from now on it may be asked to answer the turn's
    /// requests. Asked before, a client would get a question about a session
    /// it does not know yet, ahead of the tool call it is about.
    pub fn ready(&self, connection: ConnectionId) {
        let mut attached = self.lock();
        if let Some(entry) = attached
            .iter_mut()
            .find(|entry| entry.handle.connection == connection)
        {
            entry.ready = true;
        }
        drop(attached);
        self.arrived.notify_waiters();
    }

    /// The replay to `connection` has been sent: pass on what waited for it.
    pub fn replayed(&self, connection: ConnectionId) {
        let mut attached = self.lock();
        if let Some(entry) = attached
            .iter_mut()
            .find(|entry| entry.handle.connection == connection)
            && let Some(backlog) = entry.backlog.take()
        {
            for notification in backlog {
                let _ = entry.handle.cx.send_notification(notification);
            }
        }
    }

    /// Detach `connection`; false if it was not attached.
    pub fn detach(&self, connection: ConnectionId) -> bool {
        let mut attached = self.lock();
        let before = attached.len();
        attached.retain(|entry| entry.handle.connection != connection);
        attached.len() != before
    }

    pub fn contains(&self, connection: ConnectionId) -> bool {
        self.lock()
            .iter()
            .any(|entry| entry.handle.connection == connection)
    }

    /// The attached connection `connection`, if it still is.
    pub fn handle(&self, connection: ConnectionId) -> Option<ClientHandle> {
        self.lock()
            .iter()
            .find(|entry| entry.handle.connection == connection)
            .map(|entry| entry.handle.clone())
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Send `notification` to every attached connection but `except`.
    pub fn deliver(&self, notification: SessionNotification, except: Option<ConnectionId>) {
        let mut attached = self.lock();
        let receives = |entry: &Attached| Some(entry.handle.connection) != except;
        let Some(last) = attached.iter().rposition(receives) else {
            return;
        };
        // The last one (most often the only one) takes the notification
        // itself: this runs on the store's writer once per update, and a copy
        // is an allocation for every string in it.
        let (others, last) = attached.split_at_mut(last);
        for entry in others.iter_mut().filter(|entry| receives(entry)) {
            entry.pass(notification.clone());
        }
        if let Some(last) = last.first_mut() {
            last.pass(notification);
        }
    }

    /// Send `shown` to its connection, if attached, and `others` to every
    /// other attached connection.
    pub fn deliver_showing(
        &self,
        others: SessionNotification,
        shown: Option<(ConnectionId, SessionNotification)>,
    ) {
        let mut attached = self.lock();
        let mut shown = shown;
        for entry in attached.iter_mut() {
            match shown.take_if(|(connection, _)| *connection == entry.handle.connection) {
                Some((_, notification)) => entry.pass(notification),
                None => entry.pass(others.clone()),
            }
        }
    }

    /// Who answers a turn's requests: `preferred` (the prompter) while it is
    /// attached, else the ready connection attached longest.
    pub fn target(&self, preferred: ConnectionId) -> Option<ClientHandle> {
        let attached = self.lock();
        let mut ready = attached.iter().filter(|entry| entry.ready);
        ready
            .clone()
            .find(|entry| entry.handle.connection == preferred)
            .or_else(|| ready.next())
            .map(|entry| entry.handle.clone())
    }

    /// [`Self::target`], waiting up to `patience` for a connection to attach.
    pub async fn wait_for_target(
        &self,
        preferred: ConnectionId,
        patience: Duration,
    ) -> Option<ClientHandle> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let arrived = self.arrived.notified();
            let mut arrived = std::pin::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(target) = self.target(preferred) {
                return Some(target);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Attached>> {
        self.attached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
