//! Acks (`Ack { seqs }`): taken off the connection's in-flight window (for the delivery
//! latency metric) and queued with the writer, which deletes them (and every group message
//! whose last reference they were) before anything written later.

use std::collections::BTreeMap;

use hush_wire::frames::Ack;

use crate::commit::{Committer, WriterStopped};
use crate::metrics as m;
use crate::store::MailboxId;

/// Seqs one Ack frame may carry.
pub const MAX_ACKS_PER_FRAME: usize = 4096;

/// The frame carries too many seqs: the connection is closed as malformed.
#[derive(Debug)]
pub struct TooManyAcks;

/// Checks an Ack frame.
pub fn parse(ack: Ack) -> Result<Vec<u64>, TooManyAcks> {
    if ack.seqs.len() > MAX_ACKS_PER_FRAME {
        return Err(TooManyAcks);
    }
    Ok(ack.seqs)
}

/// Applies acks: `in_flight` (seq -> server timestamp) forgets them, the writer deletes them.
pub async fn apply(
    committer: &Committer,
    mailbox: MailboxId,
    in_flight: &mut BTreeMap<u64, u64>,
    seqs: Vec<u64>,
) -> Result<(), WriterStopped> {
    let now = crate::state::now_ms();
    for seq in &seqs {
        if let Some(ts) = in_flight.remove(seq) {
            metrics::histogram!(m::DELIVERY_LATENCY).record(now.saturating_sub(ts) as f64 / 1000.0);
        }
    }
    if seqs.is_empty() {
        return Ok(());
    }
    committer.ack(mailbox, seqs).await
}
