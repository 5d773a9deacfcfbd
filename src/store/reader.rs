//! The one door fragment bytes leave the store through.
//!
//! Every read of stored media (a fragment, a part, a segment, the moofs a clip is planned from,
//! the ranges a clip body streams, the boxes `check` verifies) goes through [`ByteReader`], and
//! what leaves it is [`Bytes`] (or, for a clip, an [`OpenFragments`] that hands out bounded
//! ranges): no `std::fs::File` leaves `store/`. So this file is the one place that decides where
//! a file's bytes come from: the live-edge cache (`recent.rs`), the local fragment file, or,
//! with an object tier, the file's object (`object/remote.rs`): [`ByteReader::open_file`]
//! opens the local copy when there is one and the object otherwise, and no caller knows which.
//!
//! Reads follow the deletion rule of the durability protocol (`mod.rs`): a row is removed before
//! its file, so a file that is gone when a row is followed means the media expired meanwhile
//! (`NotFound`); a handle already open keeps reading an unlinked file. The tier deletes a local
//! copy only after its object is recorded, so a reader that misses the local file finds the
//! object; an object store that cannot be reached makes the read `Unavailable`.

use super::files;
use super::object::{ObjectTier, RemoteFile};
use super::recent::RecentFragments;
use super::rows::FragmentRow;
use super::Store;
use crate::error::{Error, Result};
use bytes::Bytes;
use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

/// Reads fragment bytes by index row. Cheap to share: a path and the live-edge cache.
pub(crate) struct ByteReader {
    data_dir: PathBuf,
    /// The newest committed fragments' bytes, kept by the writer (none in offline tools like
    /// `check`, which has no writer).
    recent: Option<Arc<RecentFragments>>,
    /// Where sealed files go when their local copy is deleted (none: everything is local).
    object: Option<Arc<ObjectTier>>,
}

/// One fragment file opened for reading. Private to the store: a local handle that outlives a
/// retention unlink keeps its bytes readable, which is what lets a clip download finish (an
/// object outlives its row until the uploader deletes it, for the same effect).
pub(crate) enum FragmentFile {
    Local(std::fs::File),
    Remote(RemoteFile),
}

impl FragmentFile {
    /// Fills `buf` from `offset`; a short file is an `UnexpectedEof` error. A remote read's
    /// failure travels inside the `io::Error` as the store's [`Error`] (see [`gone_or_io`]).
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        match self {
            FragmentFile::Local(f) => f.read_exact_at(buf, offset),
            FragmentFile::Remote(r) => r.read_exact_at(buf, offset).map_err(to_io),
        }
    }

    pub(crate) fn len_bytes(&self) -> std::io::Result<u64> {
        match self {
            FragmentFile::Local(f) => Ok(f.metadata()?.len()),
            FragmentFile::Remote(r) => r.len_bytes().map_err(to_io),
        }
    }
}

/// Carries a store error through an `io::Result`, keeping a missing object a `NotFound`.
fn to_io(e: Error) -> std::io::Error {
    let kind = if e.kind == crate::error::Kind::NotFound {
        std::io::ErrorKind::NotFound
    } else {
        std::io::ErrorKind::Other
    };
    std::io::Error::new(kind, e)
}

impl ByteReader {
    pub(crate) fn new(
        data_dir: PathBuf,
        recent: Option<Arc<RecentFragments>>,
        object: Option<Arc<ObjectTier>>,
    ) -> ByteReader {
        ByteReader {
            data_dir,
            recent,
            object,
        }
    }

    /// Opens file `file_id` of a stream: the one decision of where a file's bytes are. The
    /// local copy when there is one; else, with an object tier, the file's object (no request
    /// is made until bytes are read).
    pub(crate) fn open_file(&self, stream_id: i64, file_id: i64) -> std::io::Result<FragmentFile> {
        let path = files::file_path(&self.data_dir, stream_id, file_id);
        match std::fs::File::open(path) {
            Ok(f) => Ok(FragmentFile::Local(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match &self.object {
                Some(tier) => Ok(FragmentFile::Remote(RemoteFile::new(
                    tier.clone(),
                    stream_id,
                    file_id,
                ))),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The fragment's bytes if the live-edge cache holds them (no I/O).
    fn cached(&self, row: &FragmentRow) -> Option<Bytes> {
        self.recent
            .as_ref()?
            .get(row.stream_id, row.file_id, row.file_offset)
    }

    /// `len` bytes at `offset` within a stored fragment, clamped to the fragment. Blocking.
    pub(crate) fn read_range_blocking(
        &self,
        row: &FragmentRow,
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        let size = row.size_bytes.max(0) as u64;
        let offset = offset.min(size);
        let len = len.min(size - offset) as usize;
        let mut buf = vec![0u8; len];
        self.open_file(row.stream_id, row.file_id)
            .and_then(|f| f.read_exact_at(&mut buf, row.file_offset as u64 + offset))
            .map_err(|e| gone_or_io(e, "the fragment was deleted"))?;
        Ok(Bytes::from(buf))
    }

    /// The bytes of `rows` back to back in one buffer. Fragments of a segment are usually
    /// adjacent in one file, so each adjacent run is one read. Blocking.
    pub(crate) fn read_concatenated_blocking(&self, rows: &[FragmentRow]) -> Result<Bytes> {
        let total: usize = rows.iter().map(|r| r.size_bytes.max(0) as usize).sum();
        let mut buf = Vec::with_capacity(total);
        let mut i = 0;
        while i < rows.len() {
            let mut j = i;
            while j + 1 < rows.len()
                && rows[j + 1].file_id == rows[i].file_id
                && rows[j + 1].file_offset == rows[j].file_offset + rows[j].size_bytes
            {
                j += 1;
            }
            let len = (rows[j].file_offset + rows[j].size_bytes - rows[i].file_offset) as usize;
            let start = buf.len();
            buf.resize(start + len, 0);
            self.open_file(rows[i].stream_id, rows[i].file_id)
                .and_then(|f| f.read_exact_at(&mut buf[start..], rows[i].file_offset as u64))
                .map_err(|e| gone_or_io(e, "the segment was deleted"))?;
            i = j + 1;
        }
        Ok(Bytes::from(buf))
    }

    /// Opens every file `rows` live in, each once. Blocking.
    fn open_all_blocking(&self, rows: &[FragmentRow]) -> Result<OpenFragments> {
        let mut files = HashMap::new();
        for row in rows {
            if let std::collections::hash_map::Entry::Vacant(slot) = files.entry(row.file_id) {
                let f = self
                    .open_file(row.stream_id, row.file_id)
                    .map_err(|e| gone_or_io(e, "the fragment was deleted"))?;
                slot.insert(Arc::new(f));
            }
        }
        Ok(OpenFragments { files })
    }
}

/// A set of fragments whose files are held open, so expiry unlinking one while a long response
/// streams cannot cut it short. Reads are bounded by the caller's `len`: memory per read is what
/// it asks for, never the whole set.
pub struct OpenFragments {
    /// By file id (unique across streams for the store's lifetime).
    files: HashMap<i64, Arc<FragmentFile>>,
}

impl OpenFragments {
    /// `len` bytes at `offset` within `row`, one of the rows this set was opened for. Unlike
    /// [`Store::fragment_range_blocking`] a range past the fragment is an error, not clamped: a
    /// caller streaming a planned byte layout must never get fewer bytes than it planned.
    pub async fn read(&self, row: &FragmentRow, offset: u64, len: u64) -> Result<Bytes> {
        let size = row.size_bytes.max(0) as u64;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::internal(format!(
                "a read of {len} bytes at {offset} runs past the end of fragment {} ({size} bytes)",
                row.number
            )));
        }
        let file = self
            .files
            .get(&row.file_id)
            .cloned()
            .ok_or_else(|| Error::internal("fragment file not opened"))?;
        let at = row.file_offset as u64 + offset;
        let number = row.number;
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, at)
                .map_err(|e| match carried(&e) {
                    Some(carried) => carried,
                    None => Error::internal(format!(
                        "fragment {number} is shorter on disk than its index row says: {e}"
                    )),
                })?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| Error::internal(format!("read task failed: {e}")))?
    }
}

/// A missing file means its rows were removed first (expiry, delete): the media is gone, which
/// the caller reports as `NotFound` with `what`; any other failure is an I/O error.
/// A remote read's failure (object store unreachable) is passed on as it was classified.
fn gone_or_io(e: std::io::Error, what: &str) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::not_found(what)
    } else if let Some(carried) = carried(&e) {
        carried
    } else {
        e.into()
    }
}

/// The store error a remote read put inside an `io::Error`, if it is one.
fn carried(e: &std::io::Error) -> Option<Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<Error>())
        .cloned()
}

/// Byte reads of the store's handle: each a thin async (or explicitly blocking) face of
/// [`ByteReader`].
impl Store {
    /// The stored bytes of one fragment: from the live-edge cache when it holds them.
    pub async fn fragment_bytes(&self, row: &FragmentRow) -> Result<Bytes> {
        if let Some(hit) = self.inner.reader.cached(row) {
            return Ok(hit);
        }
        let (reader, row) = (self.inner.reader.clone(), row.clone());
        let size = row.size_bytes.max(0) as u64;
        tokio::task::spawn_blocking(move || reader.read_range_blocking(&row, 0, size))
            .await
            .map_err(|e| Error::internal(format!("read task failed: {e}")))?
    }

    /// `len` bytes at `offset` within a stored fragment (clamped to the fragment). Blocking: for
    /// code already on a blocking thread (e.g. reading many moofs in one task).
    pub fn fragment_range_blocking(
        &self,
        row: &FragmentRow,
        offset: u64,
        len: u64,
    ) -> Result<Bytes> {
        self.inner.reader.read_range_blocking(row, offset, len)
    }

    /// The fragments of the segment starting at fragment `first`, their bytes in one buffer,
    /// and the number of the stream's newest fragment: one trip off the async threads.
    pub async fn read_segment(
        &self,
        stream_id: i64,
        first: i64,
    ) -> Result<Option<(Vec<FragmentRow>, Bytes, i64)>> {
        let reader = self.inner.reader.clone();
        self.read(move |c| {
            let rows = super::queries::segment_fragments(c, stream_id, first)?;
            if rows.is_empty() {
                return Ok(None);
            }
            let newest = super::queries::latest_fragment(c, stream_id)?.map_or(0, |r| r.number);
            let bytes = reader.read_concatenated_blocking(&rows)?;
            Ok(Some((rows, bytes, newest)))
        })
        .await
    }

    /// Opens the files of `rows` for a long read (a clip download): see [`OpenFragments`].
    /// Blocking, like [`Store::fragment_range_blocking`]: the caller already runs the rows'
    /// work on a blocking thread, and the rows (up to a day of fragments) are not copied.
    pub fn open_fragments_blocking(&self, rows: &[FragmentRow]) -> Result<OpenFragments> {
        self.inner.reader.open_all_blocking(rows)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::StorageConfig;
    use crate::error::Kind;
    use crate::store::retention::StreamExpiry;
    use crate::store::testing::{fragment_bytes, new_fragment, TestStore};

    /// A segment spread over two files reads back as its fragments' bytes back to back, with the
    /// stream's newest fragment number.
    #[tokio::test]
    async fn segment_reads_across_files() {
        // 116-byte fragments: the first two share a file, the third starts a new one.
        let ts = TestStore::with_config(StorageConfig {
            file_roll_bytes: 200,
            min_free_bytes: Some(0),
            ..StorageConfig::default()
        });
        let cam = ts.add_stream("cam").await;
        let mut rows = vec![ts.append(&cam, 0, 1000, 100).await];
        for i in 1..3 {
            let mut f = new_fragment(&cam, i * 1000, 1000, 100);
            f.keyframe = false;
            rows.push(ts.store.append(f).unwrap().await.unwrap().unwrap());
        }
        ts.append(&cam, 3000, 1000, 100).await;
        assert_eq!(rows[0].file_id, rows[1].file_id);
        assert_ne!(rows[1].file_id, rows[2].file_id);

        let (seg, bytes, newest) = ts.store.read_segment(cam.row.id, 1).await.unwrap().unwrap();
        assert_eq!(seg, rows);
        assert_eq!(newest, 4);
        assert_eq!(bytes, fragment_bytes(100).repeat(3));
        assert!(ts
            .store
            .read_segment(cam.row.id, 2)
            .await
            .unwrap()
            .is_none());
    }

    /// Ranges within a fragment are clamped to it.
    #[tokio::test]
    async fn ranges_are_clamped_to_the_fragment() {
        let ts = TestStore::new();
        let cam = ts.add_stream("cam").await;
        ts.append(&cam, 0, 1000, 40).await;
        let row = ts.append(&cam, 1000, 1000, 40).await;
        let whole = fragment_bytes(40);
        let store = ts.store.clone();
        let (head, tail, past) = tokio::task::spawn_blocking(move || {
            (
                store.fragment_range_blocking(&row, 0, 8).unwrap(),
                store.fragment_range_blocking(&row, 50, 1000).unwrap(),
                store.fragment_range_blocking(&row, 1000, 10).unwrap(),
            )
        })
        .await
        .unwrap();
        assert_eq!(head, whole.slice(..8));
        assert_eq!(tail, whole.slice(50..));
        assert!(past.is_empty());
    }

    /// Expiry unlinks a file: reading its fragment afterwards is `NotFound`, but a set opened
    /// before keeps reading (what lets a clip download finish), and never reads past a fragment.
    #[tokio::test]
    async fn open_fragments_outlive_expiry() {
        let ts = TestStore::new();
        let cam = ts.add_stream("cam").await;
        let row = ts.append(&cam, 0, 1000, 1000).await;
        let store = ts.store.clone();
        let rows = vec![row.clone()];
        let open = tokio::task::spawn_blocking(move || store.open_fragments_blocking(&rows))
            .await
            .unwrap()
            .unwrap();

        ts.clock.advance_us(1);
        let cutoff_server_us = ts.clock_us();
        let b = ts
            .store
            .expire_stream_batch(
                cam.row.id,
                StreamExpiry::OlderThan { cutoff_server_us },
                0,
                10,
            )
            .await
            .unwrap();
        assert_eq!((b.expired.fragments, b.expired.files), (1, 1));
        assert!(!ts.file_of(&row).exists());

        let err = ts.store.fragment_bytes(&row).await.unwrap_err();
        assert_eq!(err.kind, Kind::NotFound, "{err:?}");
        let whole = fragment_bytes(1000);
        assert_eq!(
            open.read(&row, 16, 100).await.unwrap(),
            whole.slice(16..116)
        );
        assert_eq!(open.read(&row, 0, 1016).await.unwrap(), whole);
        let past = open.read(&row, 1000, 17).await.unwrap_err();
        assert_eq!(past.kind, Kind::Internal, "{past:?}");
    }
}
