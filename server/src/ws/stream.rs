//! A connection's group streams: where its device stands in each stream-read group (a group
//! above the fan-out-on-read threshold, whose messages no mailbox references), which stream
//! messages are in flight, and when the cursor stored for a group may advance.
//!
//! Order with the mailbox: the mailbox is read first, then the streams, each by group seq.
//! A stream push is written at once only while the mailbox is caught up, so a sender-key
//! distribution (a mailbox envelope committed before the group message that needs it) is
//! always written first; otherwise the stream is re-read after the mailbox.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::hub::StreamFrame;
use crate::store::{GroupPosition, StreamCursor, StreamRead};

/// One stream-read group as this connection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cursor {
    /// Highest seq written to this connection (or acknowledged before it).
    written: u64,
    /// Highest seq known acknowledged (stored, or queued to be).
    acked: u64,
    /// The device's account left the group: the last seq it reads.
    until: Option<u64>,
}

/// The stream state of one connection.
#[derive(Debug)]
pub struct Streams {
    loaded: bool,
    /// A push named a group not (yet) in `groups`: re-read the cursors.
    reload: bool,
    groups: BTreeMap<Uuid, Cursor>,
    /// Stream messages written and not yet acknowledged, with their server timestamps.
    in_flight: BTreeMap<(Uuid, u64), u64>,
    /// The streams may hold messages after what was written: read them.
    need_fetch: bool,
}

impl Default for Streams {
    fn default() -> Self {
        Streams { loaded: false, reload: false, groups: BTreeMap::new(), in_flight: BTreeMap::new(), need_fetch: true }
    }
}

/// What to do with a stream push.
#[derive(Debug, PartialEq, Eq)]
pub enum PushAction {
    /// Write it now.
    Write,
    /// Already written (or acknowledged): drop it.
    Skip,
    /// Not in order, no room, or the mailbox is behind: read the stream later.
    Fetch,
}

impl Streams {
    /// Whether the streams must be read (before the queue-empty marker, and after lag).
    pub fn need_fetch(&self) -> bool {
        self.need_fetch
    }

    /// Whether the cursors must be read first.
    pub fn needs_cursors(&self) -> bool {
        !self.loaded || self.reload
    }

    /// Stream messages in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Marks the streams as possibly behind (a lost or dropped push).
    pub fn lagged(&mut self) {
        self.need_fetch = true;
    }

    /// Takes the stored cursors in: a group seen for the first time starts after its stored
    /// cursor; a known one keeps what this connection wrote. Groups no longer stored (the
    /// group fell to fan-out on write, or the device's account left and read to the end) are
    /// forgotten once nothing of theirs is in flight.
    pub fn load(&mut self, cursors: &[StreamCursor]) {
        let mut groups = BTreeMap::new();
        for c in cursors {
            let known = self.groups.get(&c.group);
            let written = known.map_or(c.acked_seq, |k| k.written.max(c.acked_seq));
            let acked = known.map_or(c.acked_seq, |k| k.acked.max(c.acked_seq));
            groups.insert(c.group, Cursor { written, acked, until: c.until_seq });
        }
        self.groups = groups;
        self.in_flight.retain(|(g, _), _| self.groups.contains_key(g));
        self.loaded = true;
        self.reload = false;
    }

    /// The reads that fill `room` free places in the window, one per group still to read.
    pub fn reads(&self, room: u32) -> Vec<StreamRead> {
        self.groups
            .iter()
            .filter(|(_, c)| c.until.is_none_or(|u| c.written < u))
            .map(|(&group, c)| StreamRead { group, after_seq: c.written, until_seq: c.until, limit: room })
            .collect()
    }

    /// Records what one stream read found: `more` if it may not have been all.
    pub fn fetched(&mut self, more: bool) {
        self.need_fetch = more;
    }

    /// Decides about a push: written at once only in order, with room, and while the mailbox
    /// (and the streams) are caught up.
    pub fn on_push(&mut self, frame: &StreamFrame, mailbox_caught_up: bool, room: bool) -> PushAction {
        let GroupPosition { group, seq } = frame.position;
        if !self.loaded {
            self.need_fetch = true;
            return PushAction::Fetch;
        }
        let Some(c) = self.groups.get(&group) else {
            // A group this device just joined (or that just crossed the threshold).
            self.reload = true;
            self.need_fetch = true;
            return PushAction::Fetch;
        };
        if seq <= c.written {
            return PushAction::Skip;
        }
        if c.until.is_some_and(|u| seq > u) {
            return PushAction::Skip;
        }
        if mailbox_caught_up && !self.need_fetch && room && seq == c.written + 1 {
            return PushAction::Write;
        }
        self.need_fetch = true;
        PushAction::Fetch
    }

    /// Records a stream message written to the connection.
    pub fn wrote(&mut self, position: GroupPosition, server_ts: u64) {
        if let Some(c) = self.groups.get_mut(&position.group) {
            c.written = c.written.max(position.seq);
            self.in_flight.insert((position.group, position.seq), server_ts);
        }
    }

    /// Takes acknowledgements in; gives the server timestamps of those that were in flight
    /// (for the latency metric) and, per group whose cursor may advance, the new cursor:
    /// the highest seq below which every message written here is acknowledged. An ack of a
    /// message not written on this connection moves nothing (it is written again, and the
    /// client drops the duplicate).
    pub fn ack(&mut self, acks: &[GroupPosition]) -> (Vec<u64>, Vec<GroupPosition>) {
        let mut timestamps = Vec::new();
        let mut touched = Vec::new();
        for p in acks {
            if let Some(ts) = self.in_flight.remove(&(p.group, p.seq)) {
                timestamps.push(ts);
                if !touched.contains(&p.group) {
                    touched.push(p.group);
                }
            }
        }
        let mut advance = Vec::new();
        for group in touched {
            let Some(c) = self.groups.get_mut(&group) else { continue };
            let lowest = self.in_flight.range((group, 0)..=(group, u64::MAX)).next().map(|(&(_, seq), _)| seq);
            let cursor = lowest.map_or(c.written, |seq| seq - 1);
            if cursor > c.acked {
                c.acked = cursor;
                advance.push(GroupPosition { group, seq: cursor });
            }
        }
        (timestamps, advance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const G: Uuid = Uuid::from_u128(7);

    fn frame(seq: u64) -> StreamFrame {
        StreamFrame { position: GroupPosition { group: G, seq }, server_ts: 1, frame: Bytes::new() }
    }

    fn loaded(acked: u64) -> Streams {
        let mut s = Streams::default();
        s.load(&[StreamCursor { group: G, acked_seq: acked, until_seq: None }]);
        s.fetched(false);
        s
    }

    #[test]
    fn pushes_are_written_in_order_only_while_the_mailbox_is_caught_up() {
        let mut s = loaded(4);
        assert_eq!(s.on_push(&frame(5), false, true), PushAction::Fetch, "the mailbox is behind");
        let mut s = loaded(4);
        assert_eq!(s.on_push(&frame(6), true, true), PushAction::Fetch, "a gap");
        let mut s = loaded(4);
        assert_eq!(s.on_push(&frame(5), true, false), PushAction::Fetch, "no room");
        let mut s = loaded(4);
        assert_eq!(s.on_push(&frame(4), true, true), PushAction::Skip, "acknowledged already");
        assert_eq!(s.on_push(&frame(5), true, true), PushAction::Write);
        s.wrote(frame(5).position, 1);
        assert_eq!(s.on_push(&frame(5), true, true), PushAction::Skip, "written already");
        assert_eq!(s.on_push(&frame(6), true, true), PushAction::Write);
    }

    #[test]
    fn a_push_for_an_unknown_group_rereads_the_cursors() {
        let mut s = loaded(0);
        let other = StreamFrame { position: GroupPosition { group: Uuid::from_u128(8), seq: 3 }, ..frame(3) };
        assert_eq!(s.on_push(&other, true, true), PushAction::Fetch);
        assert!(s.needs_cursors() && s.need_fetch());
    }

    #[test]
    fn the_cursor_advances_only_past_a_contiguous_acknowledged_prefix() {
        let mut s = loaded(10);
        for seq in 11..=13 {
            s.wrote(GroupPosition { group: G, seq }, 1);
        }
        let at = |seq| GroupPosition { group: G, seq };
        let (ts, advance) = s.ack(&[at(12)]);
        assert_eq!(ts.len(), 1);
        assert_eq!(advance, vec![], "11 is still in flight");
        let (_, advance) = s.ack(&[at(11)]);
        assert_eq!(advance, vec![at(12)]);
        let (_, advance) = s.ack(&[at(13), at(99)]);
        assert_eq!(advance, vec![at(13)], "an ack of something never written moves nothing");
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn a_departed_member_reads_up_to_its_last_seq_and_no_further() {
        let mut s = Streams::default();
        s.load(&[StreamCursor { group: G, acked_seq: 2, until_seq: Some(3) }]);
        assert_eq!(s.reads(10), vec![StreamRead { group: G, after_seq: 2, until_seq: Some(3), limit: 10 }]);
        s.fetched(false);
        assert_eq!(s.on_push(&frame(4), true, true), PushAction::Skip);
        s.wrote(GroupPosition { group: G, seq: 3 }, 1);
        assert!(s.reads(10).is_empty(), "read to the end");
    }
}
