//! Admission of WebSocket connections: the total connection limit, and a smaller budget
//! for connections still authenticating, in all and per source address.
//!
//! A slot is reserved atomically when the upgrade is asked for (no check-then-increment
//! race) and released when its [`Ticket`] is dropped, whatever path the connection takes.
//! When the handshake budget is full, the oldest handshake is dropped for the new one: a
//! real client finishes its handshake in one round trip, so sockets that never
//! authenticate cannot lock it out, however many addresses they come from.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use crate::metrics as m;

/// Why a new connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` connections are open.
    Full,
    /// This source address already has `max_handshakes_per_address` connections authenticating.
    AddressBusy,
}

/// The numbers admission enforces.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Open connections in all.
    pub connections: usize,
    /// Connections still authenticating.
    pub handshakes: usize,
    /// Connections still authenticating from one address.
    pub per_address: usize,
}

#[derive(Default)]
struct Handshakes {
    next_id: u64,
    /// Oldest first.
    open: BTreeMap<u64, (IpAddr, CancellationToken)>,
    per_address: HashMap<IpAddr, usize>,
}

impl Handshakes {
    fn remove(&mut self, id: u64) -> Option<CancellationToken> {
        let (addr, token) = self.open.remove(&id)?;
        if let Some(n) = self.per_address.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&addr);
            }
        }
        Some(token)
    }
}

/// The connection counters of one node.
pub struct Admission {
    budget: Budget,
    open: AtomicUsize,
    /// The next admission's number (see [`Ticket::seq`]).
    next_seq: AtomicU64,
    handshakes: Mutex<Handshakes>,
}

impl Admission {
    /// Admission with these limits.
    pub fn new(budget: Budget) -> Arc<Self> {
        Arc::new(Admission {
            budget,
            open: AtomicUsize::new(0),
            next_seq: AtomicU64::new(1),
            handshakes: Mutex::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Handshakes> {
        // Every operation leaves the maps consistent before it could panic.
        self.handshakes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a connection slot and a handshake slot for a connection from `addr`.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Result<Ticket, Refusal> {
        let max = self.budget.connections;
        if self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_err() {
            return Err(Refusal::Full);
        }
        // From here on the connection slot is released by the ticket's drop.
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut ticket = Ticket { admission: self.clone(), handshake: None, seq };
        let mut hs = self.lock();
        if hs.per_address.get(&addr).copied().unwrap_or(0) >= self.budget.per_address {
            return Err(Refusal::AddressBusy);
        }
        if hs.open.len() >= self.budget.handshakes
            && let Some((&oldest, _)) = hs.open.first_key_value()
            && let Some(token) = hs.remove(oldest)
        {
            token.cancel();
            metrics::counter!(m::HANDSHAKES_EVICTED).increment(1);
        }
        let id = hs.next_id;
        hs.next_id += 1;
        let evicted = CancellationToken::new();
        hs.open.insert(id, (addr, evicted.clone()));
        *hs.per_address.entry(addr).or_insert(0) += 1;
        ticket.handshake = Some(Handshake { id, evicted });
        Ok(ticket)
    }

    /// Open connections, authenticating or not.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Connections still authenticating.
    pub fn handshaking(&self) -> usize {
        self.lock().open.len()
    }
}

struct Handshake {
    id: u64,
    evicted: CancellationToken,
}

/// One admitted connection's slots; dropping it releases them.
pub struct Ticket {
    admission: Arc<Admission>,
    handshake: Option<Handshake>,
    seq: u64,
}

impl Ticket {
    /// When this connection was admitted, as a number that increases with each admission on
    /// this node: of two connections of one device, the one admitted later is the client's
    /// current socket, whichever finishes authenticating first.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Resolves when this connection's handshake was dropped for a newer one.
    pub async fn evicted(&self) {
        match &self.handshake {
            Some(h) => h.evicted.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// The client has answered the challenge: the connection leaves the handshake budget (which
    /// bounds sockets that make the server wait for them) and keeps its connection slot.
    pub fn answered(&mut self) {
        if let Some(h) = self.handshake.take() {
            self.admission.lock().remove(h.id);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.answered();
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(connections: usize, handshakes: usize, per_address: usize) -> Arc<Admission> {
        Admission::new(Budget { connections, handshakes, per_address })
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn tickets_release_their_slots_when_dropped() {
        let a = budget(2, 2, 2);
        let t1 = a.admit(ip(1)).unwrap_or_else(|e| panic!("{e:?}"));
        let mut t2 = a.admit(ip(1)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(a.admit(ip(2)).err(), Some(Refusal::Full));
        t2.answered();
        assert_eq!((a.open(), a.handshaking()), (2, 1));
        drop(t1);
        drop(t2);
        assert_eq!((a.open(), a.handshaking()), (0, 0));
    }

    #[test]
    fn one_address_cannot_take_more_than_its_share_of_handshakes() {
        let a = budget(100, 10, 2);
        let _t1 = a.admit(ip(9)).unwrap_or_else(|e| panic!("{e:?}"));
        let mut t2 = a.admit(ip(9)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(a.admit(ip(9)).err(), Some(Refusal::AddressBusy));
        assert!(a.admit(ip(1)).is_ok(), "another address still gets in");
        t2.answered();
        assert!(a.admit(ip(9)).is_ok(), "a connection that answered no longer counts as a handshake");
        // A refused admission released its connection slot.
        assert_eq!(a.open(), 2);
    }

    #[tokio::test]
    async fn a_full_handshake_budget_drops_the_oldest_handshake_for_a_new_one() {
        let a = budget(100, 2, 10);
        let oldest = a.admit(ip(2)).unwrap_or_else(|e| panic!("{e:?}"));
        let _second = a.admit(ip(3)).unwrap_or_else(|e| panic!("{e:?}"));
        let _third = a.admit(ip(4)).unwrap_or_else(|e| panic!("{e:?}"));
        tokio::time::timeout(std::time::Duration::from_secs(1), oldest.evicted())
            .await
            .unwrap_or_else(|_| panic!("the oldest handshake was not told to go"));
        assert_eq!(a.handshaking(), 2);
        drop(oldest);
        assert_eq!((a.open(), a.handshaking()), (2, 2), "dropping an evicted ticket frees only its connection slot");
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_limit() {
        let a = budget(50, 1000, 1000);
        let admitted: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let a = a.clone();
                    s.spawn(move || {
                        let mut kept = Vec::new();
                        for _ in 0..20 {
                            if let Ok(t) = a.admit(ip(i)) {
                                kept.push(t);
                            }
                        }
                        let n = kept.len();
                        std::mem::forget(kept); // keep the slots taken until the end of the test
                        n
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("thread panicked"))).collect()
        });
        assert_eq!(admitted.iter().sum::<usize>(), 50);
        assert_eq!(a.open(), 50);
    }
}
