//! Reading documents: aligned `upload.getFile` requests with a few in
//! flight, bytes appended in order so that a read cut short resumes where it
//! stopped, and file references refreshed (once for all reads in flight)
//! when Telegram says they expired. A document stored on another DC is
//! read there (see `dcs`); home-DC chunks go through the transfer
//! connections (see `transfer_pool`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use grammers_client::tl;

use grammers_client::session::Session;

use super::catalog::{DocRef, Entry};
use super::dcs;
use super::errors::{classify, is_rpc, permanent, transient};
use super::head;
use super::{TelegramBackend, MAX_CHUNK};
use crate::backend::{BackendError, Result};
use crate::format::{Id, ObjectKind};

/// Newest file reference per document id.
pub(super) type FileReferences = std::sync::Mutex<HashMap<i64, Vec<u8>>>;

/// The newest reference known for `doc`.
pub(super) fn newest_reference(references: &FileReferences, doc: &DocRef) -> Vec<u8> {
    let known = references.lock().unwrap_or_else(|p| p.into_inner());
    known.get(&doc.id).cloned().unwrap_or_else(|| doc.file_reference.clone())
}

/// Fresh file references Telegram may refuse in a row, with no byte read in
/// between, before a read gives up. References expire at any time, so a
/// refusal or two is routine; eight in a row means something else is wrong.
pub(super) const MAX_REFUSED_REFERENCES: u32 = 8;
/// Pauses (1, 2, 4 and 8 s) a read takes after `MAX_REFUSED_REFERENCES`
/// refusals in a row before it gives up: about 15 s more for a document
/// whose references are really never accepted.
pub(super) const REFERENCE_PAUSES: u32 = 4;

/// The aligned `upload.getFile` requests covering `start..end`: each offset
/// is a multiple of its limit, a power of two between 4 KiB and 512 KiB, so
/// no request crosses a 1 MiB boundary. The plan starts at a multiple of the
/// largest such power of two not above the length: that reads at most the
/// length again before `start`, but spares the run of small requests an
/// unaligned start would need before it reaches full-size ones.
pub fn chunk_plan(start: u64, end: u64) -> Vec<(u64, u32)> {
    let mut plan = Vec::new();
    let len = end.saturating_sub(start).max(1);
    let step = (1u64 << len.ilog2()).clamp(4096, MAX_CHUNK as u64);
    let mut pos = start - start % step;
    while pos < end {
        let align = if pos == 0 { MAX_CHUNK as u64 } else { 1u64 << pos.trailing_zeros() };
        let want = (end - pos).next_power_of_two().max(4096);
        let limit = align.min(want).min(MAX_CHUNK as u64);
        plan.push((pos, limit as u32));
        pos += limit;
    }
    plan
}

/// `upload.getFile` requests one read keeps in flight.
pub(super) const CHUNKS_IN_FLIGHT: usize = 4;
/// Ranged reads a restore should keep in flight: with four requests each,
/// up to 32 round trips overlap. A 1 GiB restore at 50 ms per call took
/// 9.7 s with 8 and 34.6 s with 4.
pub(super) const RANGES_IN_FLIGHT: usize = 8;

/// A spawned request that is cancelled when the read stops waiting for it.
pub(super) struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a download stopped.
pub(super) enum DownloadError {
    /// This file reference expired: use a newer one, or fetch the message again.
    Expired(Vec<u8>),
    Failed(BackendError),
}

impl TelegramBackend {
    /// Appends bytes `offset..end` of a document to `out`, in aligned
    /// chunks; on an error, what was read so far stays in `out`.
    pub(super) async fn download(
        &self,
        doc: &DocRef,
        offset: u64,
        end: u64,
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), DownloadError> {
        // Up to CHUNKS_IN_FLIGHT requests overlap their round trips; bytes are
        // appended strictly in order, so after an error `out` holds exactly
        // the bytes before the failed chunk and a read can resume there.
        let mut plan = chunk_plan(offset, end).into_iter();
        let dc = dcs::foreign_dc(doc.dc_id, self.session.home_dc_id().ok());
        let mut in_flight = std::collections::VecDeque::new();
        loop {
            while in_flight.len() < CHUNKS_IN_FLIGHT {
                let Some((pos, limit)) = plan.next() else { break };
                // Each home-DC chunk goes through the least busy transfer connection.
                let (client, gate, references, doc, budget, foreign) = (
                    self.transfers.lease_for(dc),
                    Arc::clone(&self.gate),
                    Arc::clone(&self.references),
                    doc.clone(),
                    self.options.budget(),
                    Arc::clone(&self.foreign_dcs),
                );
                let fetch = tokio::spawn(async move {
                    let mut used = Vec::new();
                    // Flood waits are sat out and dropped connections retried
                    // here: a chunk fails only for good reasons.
                    let answer = dcs::invoke_in(&client, &gate, budget, &foreign, dc, || {
                        // The reference is taken only now: a refresh made while
                        // this request waited for its turn is used.
                        used = newest_reference(&references, &doc);
                        let location = tl::types::InputDocumentFileLocation {
                            id: doc.id,
                            access_hash: doc.access_hash,
                            file_reference: used.clone(),
                            thumb_size: String::new(),
                        };
                        tl::functions::upload::GetFile {
                            precise: false,
                            cdn_supported: false,
                            location: location.into(),
                            offset: pos as i64,
                            limit: limit as i32,
                        }
                    })
                    .await;
                    (answer, used)
                });
                in_flight.push_back((pos, limit, AbortOnDrop(fetch)));
            }
            let Some((pos, limit, mut fetch)) = in_flight.pop_front() else { return Ok(()) };
            let (answer, used_reference) = (&mut fetch.0)
                .await
                .map_err(|e| DownloadError::Failed(permanent(format!("download task failed: {e}"))))?;
            let bytes = match answer {
                Ok(tl::enums::upload::File::File(f)) => f.bytes,
                Ok(tl::enums::upload::File::CdnRedirect(_)) => {
                    return Err(DownloadError::Failed(permanent("Telegram redirected a download to a CDN")))
                }
                Err(e) if is_rpc(&e, "FILE_REFERENCE_EXPIRED") => return Err(DownloadError::Expired(used_reference)),
                Err(e) => return Err(DownloadError::Failed(classify(e, "download"))),
            };
            let have_from = (offset.max(pos) - pos) as usize;
            let have_to = ((end.min(pos + limit as u64)) - pos) as usize;
            if bytes.len() < have_to {
                return Err(DownloadError::Failed(permanent("a document came back shorter than its size")));
            }
            out.extend_from_slice(&bytes[have_from..have_to]);
        }
    }

    pub(super) async fn read(&self, kind: ObjectKind, id: &Id, offset: u64, len: u64) -> Result<Bytes> {
        let mut out = Vec::new();
        // Fresh file references fetched in a row without reading a byte,
        // and the pauses taken after too many of them.
        let mut stuck = 0;
        let mut pauses = 0;
        loop {
            let entry = self.resolved(kind, id).await?.ok_or_else(|| BackendError::not_found(kind, id))?;
            let end = offset.checked_add(len).filter(|&e| e <= entry.size).ok_or_else(|| {
                permanent(format!(
                    "{} object {} is {} bytes, shorter than the requested range {}+{}",
                    kind.name(),
                    id,
                    entry.size,
                    offset,
                    len
                ))
            })?;
            if len == 0 {
                return Ok(Bytes::new());
            }
            let doc = entry.doc.clone().ok_or_else(|| BackendError::not_found(kind, id))?;
            out.reserve_exact(len as usize - out.len());
            let had = out.len();
            // After a fresh reference, the read goes on where it stopped.
            match self.download(&doc, offset + had as u64, end, &mut out).await {
                Ok(()) => return Ok(Bytes::from(out)),
                Err(DownloadError::Expired(used)) if stuck < MAX_REFUSED_REFERENCES || out.len() > had => {
                    stuck = if out.len() > had { 0 } else { stuck + 1 };
                    // One refresh per expiry: reads refused at once wait for
                    // the first one's refresh and take its reference.
                    let _refreshing = self.refreshing.lock().await;
                    if newest_reference(&self.references, &doc) == used {
                        self.fetch_messages(&[entry.msg_id]).await?;
                    }
                }
                Err(DownloadError::Expired(_)) if pauses < REFERENCE_PAUSES => {
                    // References keep expiring faster than this read uses
                    // them: step back, so that the reads still in flight
                    // (and their refreshes) thin out, then start over.
                    let pause = Duration::from_secs(1 << pauses);
                    tracing::info!(object = %id.short(), pause_s = pause.as_secs(), "file references keep expiring");
                    tokio::time::sleep(pause).await;
                    pauses += 1;
                    stuck = 0;
                    self.fetch_messages(&[entry.msg_id]).await?;
                }
                Err(DownloadError::Expired(_)) => {
                    return Err(transient(format!("Telegram keeps refusing the file reference of {id}"), None))
                }
                Err(DownloadError::Failed(e)) => return Err(e),
            }
        }
    }

    /// A head document's bytes; `None` if its message is gone or its first
    /// bytes are not those of a head document (then it is not read in full).
    pub(super) async fn read_head(&self, h: &Entry) -> Result<Option<Vec<u8>>> {
        let Some(mut doc) = h.doc.clone() else { return Ok(None) };
        let mut bytes = Vec::new();
        let mut end = h.size.min(MAX_CHUNK as u64);
        let mut refused = 0;
        loop {
            match self.download(&doc, bytes.len() as u64, end, &mut bytes).await {
                Ok(()) if end == h.size => return Ok(Some(bytes)),
                Ok(()) if head::starts_like_head(&bytes) => end = h.size,
                Ok(()) => return Ok(None),
                Err(DownloadError::Expired(used)) if refused < MAX_REFUSED_REFERENCES => {
                    refused += 1;
                    if newest_reference(&self.references, &doc) != used {
                        continue;
                    }
                    self.fetch_messages(&[h.msg_id]).await?;
                    match self.catalog.lock().await.doc_of(h.msg_id) {
                        Some(fresh) => doc = fresh,
                        None => return Ok(None),
                    }
                }
                Err(DownloadError::Expired(_)) => {
                    return Err(transient("Telegram keeps refusing the file reference of the head".into(), None))
                }
                Err(DownloadError::Failed(e)) => return Err(e),
            }
        }
    }
}
