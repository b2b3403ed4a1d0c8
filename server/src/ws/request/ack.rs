//! Acks (`Ack { seqs, groups }`). Mailbox seqs are taken off the connection's in-flight
//! window (for the delivery latency metric) and queued with the writer, which deletes them
//! (and every group message whose last reference they were) before anything written later.
//! Group-stream acks are taken off the stream window; where a group's cursor may advance
//! (every stream message written up to it is acknowledged), the writer stores the new cursor.

use std::collections::BTreeMap;

use hush_wire::frames::Ack;
use uuid::Uuid;

use crate::commit::{Committer, WriterStopped};
use crate::metrics as m;
use crate::store::{GroupPosition, MailboxId, StreamAck};
use crate::ws::stream::Streams;

/// Seqs (mailbox and group) one Ack frame may carry.
pub const MAX_ACKS_PER_FRAME: usize = 4096;

/// Why an Ack frame is refused (the connection is closed as malformed).
#[derive(Debug, PartialEq, Eq)]
pub enum BadAck {
    /// More than [`MAX_ACKS_PER_FRAME`] positions.
    TooMany,
    /// A group ack whose group id is not 16 bytes, or whose seq is 0.
    BadGroup,
}

/// An Ack frame, checked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Acks {
    /// Mailbox seqs.
    pub seqs: Vec<u64>,
    /// Group-stream positions.
    pub groups: Vec<GroupPosition>,
}

/// Checks an Ack frame.
pub fn parse(ack: Ack) -> Result<Acks, BadAck> {
    if ack.seqs.len() + ack.groups.len() > MAX_ACKS_PER_FRAME {
        return Err(BadAck::TooMany);
    }
    let groups = ack
        .groups
        .iter()
        .map(|g| match Uuid::from_slice(&g.group_id) {
            Ok(group) if g.seq > 0 => Ok(GroupPosition { group, seq: g.seq }),
            _ => Err(BadAck::BadGroup),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Acks { seqs: ack.seqs, groups })
}

/// Applies acks: `in_flight` (seq -> server timestamp) and `streams` forget them; the writer
/// deletes the mailbox envelopes and stores the cursors that advanced.
pub async fn apply(
    committer: &Committer,
    mailbox: MailboxId,
    in_flight: &mut BTreeMap<u64, u64>,
    streams: &mut Streams,
    acks: Acks,
) -> Result<(), WriterStopped> {
    let now = crate::state::now_ms();
    let latency = |ts: u64| metrics::histogram!(m::DELIVERY_LATENCY).record(now.saturating_sub(ts) as f64 / 1000.0);
    for seq in &acks.seqs {
        if let Some(ts) = in_flight.remove(seq) {
            latency(ts);
        }
    }
    if !acks.groups.is_empty() {
        let (timestamps, advance) = streams.ack(&acks.groups);
        timestamps.into_iter().for_each(latency);
        if !advance.is_empty() {
            let list = advance.into_iter().map(|p| StreamAck { mailbox, group: p.group, seq: p.seq }).collect();
            committer.ack_streams(list).await?;
        }
    }
    if acks.seqs.is_empty() {
        return Ok(());
    }
    committer.ack(mailbox, acks.seqs).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use hush_wire::frames::GroupAck;

    #[test]
    fn group_acks_need_a_16_byte_group_id_and_a_seq() {
        let ack =
            |group_id: Vec<u8>, seq| Ack { seqs: vec![], groups: vec![GroupAck { group_id: group_id.into(), seq }] };
        assert_eq!(parse(ack(vec![1; 15], 3)), Err(BadAck::BadGroup));
        assert_eq!(parse(ack(vec![1; 16], 0)), Err(BadAck::BadGroup));
        let ok = parse(ack(vec![1; 16], 3)).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(ok.groups, vec![GroupPosition { group: Uuid::from_bytes([1; 16]), seq: 3 }]);
        let many =
            Ack { seqs: vec![1; MAX_ACKS_PER_FRAME], groups: vec![GroupAck { group_id: vec![1; 16].into(), seq: 1 }] };
        assert_eq!(parse(many), Err(BadAck::TooMany));
    }
}
