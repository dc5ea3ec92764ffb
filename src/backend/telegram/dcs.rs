//! Documents on another data centre. A document lives on the DC it was
//! uploaded to (`document.dc_id`): a chat written by accounts homed on
//! different DCs (two hosts, a bot and a user) holds documents only another
//! DC serves, and `upload.getFile` at home answers `FILE_MIGRATE_X`. Reads
//! of such a document go to its DC directly, over grammers' connection to
//! that DC (made on first use, with the key the session keeps for it). The
//! account's authorization must be copied there once: when that DC answers
//! `AUTH_KEY_UNREGISTERED`, the authorization is exported at home
//! (`auth.exportAuthorization`) and imported there
//! (`auth.importAuthorization`), at most once per foreign DC per run, shared
//! by every read in flight. The key stays authorized on Telegram and in the
//! session file, so later runs usually import nothing. Uploads stay at home.

use std::collections::HashMap;
use std::sync::Arc;

use grammers_client::tl::{self, RemoteCall};
use grammers_client::InvocationError;

use super::errors::is_rpc;
use super::retry::{self, Budget, FloodGate, Line};

/// Authorizations imported into one DC in one run at most: a key refused
/// again after an import is not a missing authorization but a revoked one.
const IMPORTS_PER_DC: u32 = 1;

/// The authorizations imported into foreign DCs during this run.
#[derive(Default)]
pub(super) struct ForeignDcs {
    /// Per foreign DC, the imports made so far; locked while one is made,
    /// so that reads refused together import once.
    imports: std::sync::Mutex<HashMap<i32, Arc<tokio::sync::Mutex<u32>>>>,
}

impl ForeignDcs {
    fn state(&self, dc: i32) -> Arc<tokio::sync::Mutex<u32>> {
        let mut all = self.imports.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(all.entry(dc).or_default())
    }

    /// Imports made into `dc` so far (after waiting for one in progress).
    pub(super) async fn imports(&self, dc: i32) -> u32 {
        *self.state(dc).lock().await
    }

    /// Copies the account's authorization into `dc` after a request sent
    /// when `seen` imports had been made was refused there. Returns whether
    /// the request is worth sending again: an import made since then, by
    /// this call or another, says yes; a refusal after this run's import
    /// says no.
    async fn authorize(
        &self,
        client: &Line,
        gate: &FloodGate,
        budget: Budget,
        dc: i32,
        seen: u32,
    ) -> Result<bool, InvocationError> {
        let state = self.state(dc);
        let mut done = state.lock().await;
        if *done > seen {
            return Ok(true);
        }
        if *done >= IMPORTS_PER_DC {
            return Ok(false);
        }
        let tl::enums::auth::ExportedAuthorization::Authorization(exported) =
            retry::invoke_retrying(client, gate, budget, || tl::functions::auth::ExportAuthorization { dc_id: dc })
                .await?;
        retry::invoke_retrying_in(client, gate, budget, Some(dc), || tl::functions::auth::ImportAuthorization {
            id: exported.id,
            bytes: exported.bytes.clone(),
        })
        .await?;
        *done += 1;
        tracing::debug!(dc, "imported the account's authorization into a foreign DC");
        Ok(true)
    }
}

/// The DC to send a document's requests to: `None` for the home DC (also
/// when the document names no DC).
pub(super) fn foreign_dc(document_dc: i32, home_dc: Option<i32>) -> Option<i32> {
    (document_dc > 0 && home_dc.is_some_and(|home| home != document_dc)).then_some(document_dc)
}

/// Sends the request `make` builds in `dc` (`None`: at home) as
/// [`retry::invoke_retrying`] does (same gate, flood waits and retries);
/// in a foreign DC that does not know the account yet, copies the
/// authorization there first (once per run, see [`ForeignDcs`]).
pub(super) async fn invoke_in<R, F>(
    client: &Line,
    gate: &FloodGate,
    budget: Budget,
    foreign: &ForeignDcs,
    dc: Option<i32>,
    mut make: F,
) -> Result<R::Return, InvocationError>
where
    R: RemoteCall + Send + Sync + 'static,
    R::Return: Send + 'static,
    F: FnMut() -> R,
{
    let Some(dc) = dc else { return retry::invoke_retrying(client, gate, budget, make).await };
    loop {
        let seen = foreign.imports(dc).await;
        match retry::invoke_retrying_in(client, gate, budget, Some(dc), &mut make).await {
            Err(e) if is_rpc(&e, "AUTH_KEY_UNREGISTERED") => {
                if !foreign.authorize(client, gate, budget, dc, seen).await? {
                    return Err(e);
                }
            }
            answer => return answer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_named_dc_other_than_home_is_foreign() {
        assert_eq!(foreign_dc(1, Some(2)), Some(1));
        assert_eq!(foreign_dc(2, Some(2)), None);
        assert_eq!(foreign_dc(0, Some(2)), None);
        assert_eq!(foreign_dc(4, None), None);
    }
}
