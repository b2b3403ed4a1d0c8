//! The I/O driver: one actor thread per account (current-thread runtime + `LocalSet`, since
//! libsignal's futures are `!Send`) that owns the [`Machine`], carries out its requests over
//! REST and the WebSocket, reconnects with backoff, and answers the [`crate::Client`] handle.

mod actor;
mod rest;
mod ws;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rand::SeedableRng as _;
use tokio::sync::{mpsc, oneshot};

use crate::account::{Registration, RegistrationParams};
use crate::error::ClientError;
use crate::store::{ClientStore, SqliteStore};
use crate::types::{ClientConfig, Contact, Event, MessageId, MessageRecord, SafetyNumber, Status};

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
    Retry {
        id: MessageId,
        reply: Reply<()>,
    },
    History {
        peer: String,
        limit: usize,
        reply: Reply<Vec<MessageRecord>>,
    },
    MessagesAfter {
        after: u64,
        limit: usize,
        reply: Reply<Vec<MessageRecord>>,
    },
    Contacts {
        reply: Reply<Vec<Contact>>,
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
    WaitingFor {
        reply: Reply<String>,
    },
    /// The receiver is told `Ok` once idle, or why draining cannot succeed.
    WaitQueueEmpty {
        reply: Reply<oneshot::Receiver<Result<(), String>>>,
    },
    EndDrain {
        reply: Reply<()>,
    },
    Shutdown {
        reply: Reply<()>,
    },
}

pub(crate) type Subscribers = Arc<Mutex<Vec<mpsc::UnboundedSender<Event>>>>;

/// The actor's mailbox and its thread.
#[derive(Debug)]
pub(crate) struct Handle {
    tx: mpsc::UnboundedSender<Command>,
    subscribers: Subscribers,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The database file inside a data directory.
pub(crate) fn db_path(config: &ClientConfig) -> PathBuf {
    config.data_dir.join("client.db")
}

async fn open_store(config: &ClientConfig) -> Result<SqliteStore, ClientError> {
    std::fs::create_dir_all(&config.data_dir)?;
    Ok(SqliteStore::open(&db_path(config)).await?)
}

impl Handle {
    pub async fn register(config: ClientConfig, username: &str) -> Result<Handle, ClientError> {
        let store = open_store(&config).await?;
        if let Some(existing) = store.account().await? {
            store.close().await;
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
        store.close().await;
        Self::open(config).await
    }

    pub async fn open(config: ClientConfig) -> Result<Handle, ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let subscribers: Subscribers = Arc::default();
        let (ready_tx, ready_rx) = oneshot::channel();
        let subs = subscribers.clone();
        let thread = std::thread::Builder::new()
            .name("hush-client".into())
            .spawn(move || actor::run(config, rx, subs, ready_tx))?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Handle { tx, subscribers, thread: Mutex::new(Some(thread)) }),
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
        if let Some(thread) = thread {
            // The actor has answered and is returning; joining is quick.
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        Ok(())
    }
}
