//! The local history searched and trimmed: [`Machine::search`] and
//! [`Machine::delete_message`]. Neither touches the network or the other devices.

use super::Machine;
use crate::error::MachineError;
use crate::search::SearchHit;
use crate::store::{Batch, SearchQuery};
use crate::types::{ConversationId, GROUP_PREFIX, GroupState, MessageId};

impl Machine {
    /// Text messages containing `text` (see [`crate::store::search`]), best first, at most
    /// `limit`, in `conversation` or in all of them. Groups whose invite is not accepted (or
    /// was declined) are never searched: their messages are hidden everywhere else too.
    pub async fn search(
        &self,
        text: &str,
        conversation: Option<ConversationId>,
        limit: usize,
    ) -> Result<Vec<SearchHit>, MachineError> {
        let exclude = self
            .store
            .groups()
            .await?
            .into_iter()
            .filter(|g| g.state == GroupState::Invited || g.declined)
            .map(|g| ConversationId::Group(g.id))
            .collect();
        let query = SearchQuery { text: text.to_owned(), conversation, exclude, limit };
        let mut hits = Vec::new();
        for row in self.store.search(&query).await? {
            let message = self.record(row.message, None).await?;
            hits.push(SearchHit { message, matches: row.matches, newer: row.newer });
        }
        Ok(hits)
    }

    /// The conversation `name` names on this device, without asking the server: a group
    /// (`group:<uuid>`), or the one with the contact of that username (`None` if there is no
    /// such contact: nothing was ever exchanged with them here).
    pub async fn local_conversation(&self, name: &str) -> Result<Option<ConversationId>, MachineError> {
        let name = name.trim();
        if let Some(group) = name.strip_prefix(GROUP_PREFIX) {
            let group = uuid::Uuid::parse_str(group).map_err(|_| {
                MachineError::Invalid(format!(
                    "{name:?} is not a group; write it as group:<uuid> (see `hush group list`)"
                ))
            })?;
            return Ok(Some(ConversationId::Group(group)));
        }
        let contact = self.store.contact_by_username(&name.to_lowercase()).await?;
        Ok(contact.map(|c| ConversationId::Direct(c.account_id)))
    }

    /// Deletes message `id` from this device's history and search index (not from the other
    /// devices of the account, nor from the correspondents'). False if no message `id` is
    /// stored. A message still in the outbox is refused: cancel it first. Its position
    /// (`local_seq`) is never given to another message.
    pub async fn delete_message(&mut self, id: MessageId) -> Result<bool, MachineError> {
        if self.store.message(id).await?.is_none() {
            return Ok(false);
        }
        if self.store.outbox_by_message(id).await?.is_some_and(|o| o.kind.is_text()) {
            return Err(MachineError::Invalid(format!(
                "message {id} is still in the outbox; cancel it first (`hush outbox cancel {id}`)"
            )));
        }
        let mut batch = Batch::default();
        batch.messages_remove.push(id);
        self.store.commit(batch).await?;
        Ok(true)
    }
}
