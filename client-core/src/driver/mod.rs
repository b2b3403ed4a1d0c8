//! The I/O driver: one actor thread per account (current-thread runtime + `LocalSet`, since
//! libsignal's futures are `!Send`) that owns the [`Machine`], carries out its requests over
//! REST and the WebSocket, reconnects with backoff, and answers the [`crate::Client`] handle.

mod actor;
mod link;
mod lock;
mod rest;
mod ws;

pub(crate) use link::Channel as LinkChannel;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rand::SeedableRng as _;
use tokio::sync::{mpsc, oneshot};

use crate::account::{Registration, RegistrationParams};
use crate::error::ClientError;
use crate::store::{Batch, ClientStore, SqliteStore};
use crate::types::{ClientConfig, Contact, Event, MessageId, MessageRecord, OutboxEntry, SafetyNumber, Status};
use lock::DirLock;

pub(crate) use rest::now_ms;

type Reply<T> = oneshot::Sender<Result<T, ClientError>>;

/// What the [`crate::Client`] handle asks the actor.
#[derive(Debug)]
pub(crate) enum Command {
    Connect {
        reply: Reply<()>,
    },
    Disconnect {
        reply: Reply<()>,
    },
    SendText {
        to: String,
        text: String,
        reply: Reply<MessageId>,
    },
    SendTyping {
        to: String,
        typing: bool,
        reply: Reply<()>,
    },
    MarkRead {
        peer: String,
        reply: Reply<()>,
    },
    /// What is known of a contact's presence.
    Presence {
        peer: String,
        reply: Reply<crate::presence::Presence>,
    },
    SetPresenceSharing {
        on: bool,
        reply: Reply<()>,
    },
    PresenceSharing {
        reply: Reply<bool>,
    },
    Retry {
        id: MessageId,
        reply: Reply<()>,
    },
    Cancel {
        id: MessageId,
        reply: Reply<()>,
    },
    Outbox {
        reply: Reply<Vec<OutboxEntry>>,
    },
    History {
        peer: String,
        limit: usize,
        reply: Reply<Vec<MessageRecord>>,
    },
    Unread {
        peer: String,
        reply: Reply<usize>,
    },
    MessagesAfter {
        after: u64,
        limit: usize,
        reply: Reply<Vec<MessageRecord>>,
    },
    Contacts {
        reply: Reply<Vec<Contact>>,
    },
    /// Searches the local history.
    Search {
        query: String,
        options: crate::search::SearchOptions,
        reply: Reply<Vec<crate::search::SearchHit>>,
    },
    /// Deletes a message from the local history.
    DeleteMessage {
        id: MessageId,
        reply: Reply<()>,
    },
    SafetyNumber {
        peer: String,
        reply: Reply<SafetyNumber>,
    },
    Trust {
        peer: String,
        reply: Reply<()>,
    },
    Status {
        reply: Reply<Status>,
    },
    /// Sets (`Some`) or removes (`None`) this device's push target.
    SetPush {
        target: Option<hush_wire::api::PushTargetBody>,
        reply: Reply<()>,
    },
    /// This device's push target.
    Push {
        reply: Reply<Option<hush_wire::api::PushStatus>>,
    },
    /// The account's devices, from the server.
    Devices {
        reply: Reply<Vec<crate::types::DeviceEntry>>,
    },
    /// Removes a device of this account (this one too: then it stops).
    RemoveDevice {
        id: u32,
        reply: Reply<()>,
    },
    /// Names this device (`None` clears the name).
    RenameDevice {
        name: Option<String>,
        reply: Reply<()>,
    },
    WaitingFor {
        reply: Reply<String>,
    },
    /// The receiver is told `Ok` once idle, or why draining cannot succeed.
    WaitQueueEmpty {
        reply: Reply<oneshot::Receiver<Result<(), ClientError>>>,
    },
    EndDrain {
        reply: Reply<()>,
    },
    Shutdown {
        reply: Reply<()>,
    },
    Group {
        op: GroupCommand,
        reply: Reply<GroupReply>,
    },
    /// Registers another device of this account on the server; answers the batch that device
    /// commits in its own data directory.
    AddDevice {
        reply: Reply<Batch>,
    },
    /// Approves a new device's link code: a link token and this account's identity key pair,
    /// sealed to the new device, through the server's provisioning relay.
    ApproveLink {
        code: hush_keys::provision::LinkCode,
        options: crate::types::LinkOptions,
        reply: Reply<()>,
    },
    /// This device was just linked: tell the account's other devices.
    AnnounceLinked {
        name: Option<String>,
        reply: Reply<()>,
    },
}

/// A group operation of the [`crate::Client`] handle. Groups are named as `group:<uuid>` (or
/// the bare uuid), members by username.
#[derive(Debug)]
pub(crate) enum GroupCommand {
    Create { title: String, members: Vec<String> },
    Add { group: String, members: Vec<String> },
    Remove { group: String, member: String },
    Leave { group: String },
    Delete { group: String },
    MembersCanAdd { group: String, on: bool },
    Role { group: String, member: String, role: crate::types::GroupRole },
    Title { group: String, title: String },
    Accept { group: String },
    Decline { group: String },
    List,
    Invites,
    Info { group: String },
}

/// What a group operation answers.
#[derive(Debug)]
pub(crate) enum GroupReply {
    Done,
    Info(crate::types::GroupInfo),
    List(Vec<crate::types::GroupInfo>),
}

pub(crate) type Subscribers = Arc<Mutex<Vec<mpsc::UnboundedSender<Event>>>>;

/// The actor's mailbox and its thread.
#[derive(Debug)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Command>,
    subscribers: Subscribers,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held until shutdown: no other process may use the data directory meanwhile.
    lock: Mutex<Option<DirLock>>,
}

/// The database file inside a data directory.
pub(crate) fn db_path(config: &ClientConfig) -> PathBuf {
    config.data_dir.join("client.db")
}

async fn open_store(config: &ClientConfig) -> Result<SqliteStore, ClientError> {
    Ok(SqliteStore::open(&db_path(config)).await?)
}

/// Removes what a failed registration left: the database files (while still holding the
/// lock, so no other process can have opened them meanwhile), and, if registration created
/// the directory, the lock file and the directory itself. In a directory that existed before,
/// the lock file stays: unlinking it would let two processes lock two different files.
fn remove_half_made(config: &ClientConfig, created_dir: bool, lock: DirLock) {
    let db = db_path(config);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
    if created_dir {
        let _ = std::fs::remove_file(lock::lock_path(&config.data_dir));
    }
    drop(lock);
    if created_dir {
        let _ = std::fs::remove_dir(&config.data_dir);
    }
}

impl Handle {
    pub async fn register(config: ClientConfig, username: &str) -> Result<Handle, ClientError> {
        if config.server_url.is_empty() {
            return Err(ClientError::Invalid("no server URL to register on".into()));
        }
        Self::create(config, |config| async move { Self::create_account(&config, username).await }).await
    }

    /// Makes `config.data_dir` (which must not hold an account yet) the home of the device
    /// `existing` registers on the server, and opens it.
    pub async fn add_device(&self, config: ClientConfig) -> Result<Handle, ClientError> {
        Self::create(config, |config| async move {
            let store = open_store(&config).await?;
            let result = async {
                if let Some(existing) = store.account().await? {
                    return Err(ClientError::AlreadyRegistered(existing.username));
                }
                let (reply, rx) = oneshot::channel();
                self.send(Command::AddDevice { reply })?;
                let mut batch = rx.await.map_err(|_| ClientError::Shutdown)??;
                if !config.server_url.is_empty()
                    && let Some(account) = batch.account.as_mut()
                {
                    account.server_url = config.server_url.clone();
                }
                store.commit(batch).await?;
                Ok(())
            }
            .await;
            store.close().await;
            result
        })
        .await
    }

    /// Opens a provisioning channel on the server at `server_url`: the link code to show.
    pub async fn open_link(server_url: &str) -> Result<LinkChannel, ClientError> {
        if server_url.is_empty() {
            return Err(ClientError::Invalid("no server URL to link on".into()));
        }
        link::open(server_url).await
    }

    /// Waits for `channel`'s approval, registers this device under the approving account and
    /// opens it from `config.data_dir` (which must not hold an account yet).
    pub async fn finish_link(
        config: ClientConfig,
        channel: LinkChannel,
        name: Option<String>,
    ) -> Result<(Handle, crate::types::HistoryImport), ClientError> {
        let announce = name.clone();
        let mut history = crate::types::HistoryImport::None;
        let slot = &mut history;
        let handle = Self::create(config, |config| async move {
            let provision = channel.provision_message().await?;
            *slot = link::register(config, provision, name).await?;
            Ok(())
        })
        .await?;
        // The other devices learn of this one at once (not only at their next send, from the
        // server's device-set correction). Queued in the outbox: it goes out when connected.
        let (reply, rx) = oneshot::channel();
        handle.send(Command::AnnounceLinked { name: announce, reply })?;
        rx.await.map_err(|_| ClientError::Shutdown)??;
        Ok((handle, history))
    }

    /// Creates (or reuses) the data directory, locks it, runs `setup` (which stores an account
    /// in it) and starts the actor; removes what a failed `setup` left.
    async fn create<F, Fut>(config: ClientConfig, setup: F) -> Result<Handle, ClientError>
    where
        F: FnOnce(ClientConfig) -> Fut,
        Fut: Future<Output = Result<(), ClientError>>,
    {
        let created_dir = !config.data_dir.exists();
        std::fs::create_dir_all(&config.data_dir)?;
        let lock = match DirLock::acquire(&config.data_dir) {
            Ok(lock) => lock,
            Err(e) => {
                if created_dir {
                    let _ = std::fs::remove_dir(&config.data_dir);
                }
                return Err(e);
            }
        };
        let had_db = db_path(&config).exists();
        match setup(config.clone()).await {
            Ok(()) => Self::start(config, lock).await,
            Err(e) => {
                if !had_db {
                    remove_half_made(&config, created_dir, lock);
                }
                Err(e)
            }
        }
    }

    async fn create_account(config: &ClientConfig, username: &str) -> Result<(), ClientError> {
        let store = open_store(config).await?;
        let result = async {
            if let Some(existing) = store.account().await? {
                return Err(ClientError::AlreadyRegistered(existing.username));
            }
            let rest = rest::Rest::new(&config.server_url, None)?;
            let info = rest.server_info().await?;
            let params = RegistrationParams {
                username: username.to_owned(),
                server_url: config.server_url.clone(),
                trust_root: info.trust_root.0,
                now_ms: now_ms(),
            };
            let mut rng = rand::rngs::StdRng::from_os_rng();
            let mut registration = Registration::generate(params, &mut rng)?;
            registration.sign(&rest.registration_challenge().await?, &mut rng)?;
            let response = rest.register(&registration.request).await?;
            let (_, batch) = registration.finish(&response);
            store.commit(batch).await?;
            Ok::<(), ClientError>(())
        }
        .await;
        store.close().await;
        result
    }

    /// Opens the account of `config.data_dir`; refuses a directory without one (creating
    /// nothing) and a directory another process holds.
    pub async fn open(config: ClientConfig) -> Result<Handle, ClientError> {
        if !db_path(&config).is_file() {
            return Err(ClientError::NotRegistered);
        }
        let lock = DirLock::acquire(&config.data_dir)?;
        Self::start(config, lock).await
    }

    async fn start(config: ClientConfig, lock: DirLock) -> Result<Handle, ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let subscribers: Subscribers = Arc::default();
        let (ready_tx, ready_rx) = oneshot::channel();
        let subs = subscribers.clone();
        let thread = std::thread::Builder::new()
            .name("hush-client".into())
            .spawn(move || actor::run(config, rx, subs, ready_tx))?;
        match ready_rx.await {
            Ok(Ok(())) => {
                Ok(Handle { tx, subscribers, thread: Mutex::new(Some(thread)), lock: Mutex::new(Some(lock)) })
            }
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(ClientError::Shutdown),
        }
    }

    pub fn subscribe(&self, tx: mpsc::UnboundedSender<Event>) {
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(tx);
        }
    }

    pub fn send(&self, command: Command) -> Result<(), ClientError> {
        self.tx.send(command).map_err(|_| ClientError::Shutdown)
    }

    pub async fn shutdown(&self) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown { reply }).is_ok() {
            let _ = rx.await;
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        let mut result = Ok(());
        if let Some(thread) = thread {
            // The actor has answered and is returning; joining is quick.
            if !matches!(tokio::task::spawn_blocking(move || thread.join()).await, Ok(Ok(()))) {
                result = Err(ClientError::Io(std::io::Error::other("the client's thread panicked while stopping")));
            }
        }
        // The store is closed: another process may use the data directory now.
        drop(self.lock.lock().ok().and_then(|mut l| l.take()));
        result
    }
}
