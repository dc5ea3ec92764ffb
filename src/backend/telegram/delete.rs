//! Deleting messages: `channels.deleteMessages` or
//! `messages.deleteMessages` with revoke, 100 ids at a time.

use grammers_client::session::types::PeerKind;
use grammers_client::tl;

use super::{TelegramBackend, FETCH_BATCH};
use crate::backend::Result;

impl TelegramBackend {
    pub(super) async fn delete_messages(&self, ids: Vec<i32>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let peer = self.peer().await?;
        for chunk in ids.chunks(FETCH_BATCH) {
            if peer.id.kind() == PeerKind::Channel {
                self.invoke(
                    &tl::functions::channels::DeleteMessages { channel: peer.into(), id: chunk.to_vec() },
                    "delete",
                )
                .await?;
            } else {
                self.invoke(&tl::functions::messages::DeleteMessages { revoke: true, id: chunk.to_vec() }, "delete")
                    .await?;
            }
        }
        self.catalog.lock().await.forget(&ids.into_iter().collect());
        Ok(())
    }
}
