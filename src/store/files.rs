//! Where fragment bytes live: `<data_dir>/streams/<stream id>/<file id>.frag`, append-only.
//! Stream ids (not names) name the folders so a deleted stream's files never mix with those of
//! a new stream of the same name.

use std::fs::File;
use std::path::{Path, PathBuf};

pub const STREAMS_DIR: &str = "streams";
const FILE_SUFFIX: &str = ".frag";

pub fn stream_dir(data_dir: &Path, stream_id: i64) -> PathBuf {
    data_dir.join(STREAMS_DIR).join(stream_id.to_string())
}

pub fn file_path(data_dir: &Path, stream_id: i64, file_id: i64) -> PathBuf {
    stream_dir(data_dir, stream_id).join(format!("{file_id:010}{FILE_SUFFIX}"))
}

/// The file id encoded in a fragment file's name, if it is one.
pub fn parse_file_name(name: &str) -> Option<i64> {
    name.strip_suffix(FILE_SUFFIX)?.parse().ok()
}

/// Makes a directory entry durable (new files, removed files).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// All (stream id, file id, path) of fragment files on disk.
pub fn list_files(data_dir: &Path) -> std::io::Result<Vec<(i64, i64, PathBuf)>> {
    let mut out = Vec::new();
    let root = data_dir.join(STREAMS_DIR);
    let Ok(entries) = std::fs::read_dir(&root) else {
        return Ok(out);
    };
    for entry in entries {
        let entry = entry?;
        let Some(stream_id) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        for f in std::fs::read_dir(entry.path())? {
            let f = f?;
            if let Some(file_id) = f.file_name().to_str().and_then(parse_file_name) {
                out.push((stream_id, file_id, f.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let p = file_path(Path::new("/d"), 7, 42);
        assert_eq!(p, Path::new("/d/streams/7/0000000042.frag"));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_file_name(name), Some(42));
        assert_eq!(parse_file_name("x.tmp"), None);
    }
}

/// Space on the filesystem holding a directory, from `statvfs(2)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiskSpace {
    pub total_bytes: u64,
    /// What an unprivileged writer may still use (`f_bavail`).
    pub free_bytes: u64,
    pub read_only: bool,
}

/// `statvfs(2)` of `dir`; `None` when it cannot be read (e.g. the directory is gone).
pub fn disk_space(dir: &Path) -> Option<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `st` a valid out-pointer for the call.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
    if rc != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some(DiskSpace {
        total_bytes: st.f_blocks as u64 * frsize,
        free_bytes: st.f_bavail as u64 * frsize,
        read_only: st.f_flag & libc::ST_RDONLY != 0,
    })
}
