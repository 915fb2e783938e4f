//! Decoding of what read(2) returns from a fanotify group initialised with
//! `FAN_REPORT_DFID_NAME`: `struct fanotify_event_metadata` records, each followed by info
//! records carrying a directory file handle and a name. Pure and bounds-checked: malformed
//! input ends the iteration, never panics.

/// `sizeof(struct fanotify_event_metadata)`.
const METADATA_BYTES: usize = 24;
/// `sizeof(struct fanotify_event_info_header)`.
const INFO_HEADER_BYTES: usize = 4;
/// `fsid` (8 bytes) after the info header.
const FSID_BYTES: usize = 8;
/// `handle_bytes` + `handle_type` of `struct file_handle`.
const HANDLE_HEADER_BYTES: usize = 8;

/// One event: its mask and the directory-entry records that came with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FanEvent<'a> {
    pub(crate) mask: u64,
    /// An event descriptor; `FAN_NOFD` (-1) for fid-reporting groups, which is all we use.
    /// Anything else is closed by the caller.
    pub(crate) fd: i32,
    /// Info records of the dirent kinds we understand; others are skipped.
    pub(crate) infos: Vec<FidInfo<'a>>,
}

/// A `fanotify_event_info_fid` record: which directory, and which name in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FidInfo<'a> {
    /// `FAN_EVENT_INFO_TYPE_*`.
    pub(crate) info_type: u8,
    /// `struct file_handle` as the kernel laid it out: `handle_bytes`, `handle_type`, then
    /// the opaque bytes. Used as-is as the cache key and to rebuild the handle.
    pub(crate) handle: &'a [u8],
    /// The entry name without its NUL; `.` for the directory itself; empty for record
    /// types without a name.
    pub(crate) name: &'a [u8],
}

impl FidInfo<'_> {
    /// `handle_type` of the file handle.
    pub(crate) fn handle_type(&self) -> i32 {
        read_i32(self.handle, 4).unwrap_or(0)
    }

    /// The opaque bytes of the file handle.
    pub(crate) fn handle_bytes(&self) -> &[u8] {
        self.handle.get(HANDLE_HEADER_BYTES..).unwrap_or(&[])
    }
}

/// Why decoding stopped early; the caller logs it and treats the read as an overflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The kernel speaks a metadata version we were not built for.
    Version(u8),
    /// A length field points outside the buffer.
    Truncated,
}

/// Iterates the events of one read(2).
pub(crate) struct FanEvents<'a> {
    rest: &'a [u8],
}

impl<'a> FanEvents<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        FanEvents { rest: buf }
    }
}

impl<'a> Iterator for FanEvents<'a> {
    type Item = Result<FanEvent<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let decoded = decode_event(self.rest);
        match decoded {
            Ok((event, len)) => {
                self.rest = self.rest.get(len..).unwrap_or(&[]);
                Some(Ok(event))
            }
            Err(err) => {
                self.rest = &[];
                Some(Err(err))
            }
        }
    }
}

fn decode_event(buf: &[u8]) -> Result<(FanEvent<'_>, usize), DecodeError> {
    let event_len = read_u32(buf, 0).ok_or(DecodeError::Truncated)? as usize;
    let version = *buf.get(4).ok_or(DecodeError::Truncated)?;
    if version != libc::FANOTIFY_METADATA_VERSION {
        return Err(DecodeError::Version(version));
    }
    let metadata_len = read_u16(buf, 6).ok_or(DecodeError::Truncated)? as usize;
    let mask = read_u64(buf, 8).ok_or(DecodeError::Truncated)?;
    let fd = read_i32(buf, 16).ok_or(DecodeError::Truncated)?;
    if event_len < METADATA_BYTES || metadata_len < METADATA_BYTES || metadata_len > event_len {
        return Err(DecodeError::Truncated);
    }
    let body = buf.get(metadata_len..event_len).ok_or(DecodeError::Truncated)?;
    Ok((FanEvent { mask, fd, infos: decode_infos(body)? }, event_len))
}

fn decode_infos(mut body: &[u8]) -> Result<Vec<FidInfo<'_>>, DecodeError> {
    let mut infos = Vec::new();
    while !body.is_empty() {
        let info_type = *body.first().ok_or(DecodeError::Truncated)?;
        let len = read_u16(body, 2).ok_or(DecodeError::Truncated)? as usize;
        if len < INFO_HEADER_BYTES {
            return Err(DecodeError::Truncated);
        }
        let record = body.get(..len).ok_or(DecodeError::Truncated)?;
        if let Some(info) = decode_fid(info_type, record)? {
            infos.push(info);
        }
        body = &body[len..];
    }
    Ok(infos)
}

/// Decodes the fid-carrying record types; `Ok(None)` for others (pidfd, error, range...).
fn decode_fid(info_type: u8, record: &[u8]) -> Result<Option<FidInfo<'_>>, DecodeError> {
    let has_name = match info_type {
        libc::FAN_EVENT_INFO_TYPE_DFID_NAME
        | libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME
        | libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME => true,
        libc::FAN_EVENT_INFO_TYPE_FID | libc::FAN_EVENT_INFO_TYPE_DFID => false,
        _ => return Ok(None),
    };
    let handle_at = INFO_HEADER_BYTES + FSID_BYTES;
    let handle_len = read_u32(record, handle_at).ok_or(DecodeError::Truncated)? as usize;
    let handle_end = handle_at.saturating_add(HANDLE_HEADER_BYTES).saturating_add(handle_len);
    let handle = record.get(handle_at..handle_end).ok_or(DecodeError::Truncated)?;
    let name = if has_name {
        let tail = record.get(handle_end..).ok_or(DecodeError::Truncated)?;
        let end = tail.iter().position(|&b| b == 0).ok_or(DecodeError::Truncated)?;
        &tail[..end]
    } else {
        &[][..]
    };
    Ok(Some(FidInfo { info_type, handle, name }))
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(buf.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn read_i32(buf: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes one info record the way the kernel does (padded to 4 bytes).
    pub(crate) fn info(info_type: u8, handle: &[u8], name: Option<&[u8]>) -> Vec<u8> {
        let mut body = vec![0u8; FSID_BYTES];
        body.extend_from_slice(&(handle.len() as u32).to_ne_bytes());
        body.extend_from_slice(&1i32.to_ne_bytes()); // handle_type
        body.extend_from_slice(handle);
        if let Some(name) = name {
            body.extend_from_slice(name);
            body.push(0);
        }
        while (body.len() + INFO_HEADER_BYTES) % 4 != 0 {
            body.push(0);
        }
        let mut out = vec![info_type, 0];
        out.extend_from_slice(&((body.len() + INFO_HEADER_BYTES) as u16).to_ne_bytes());
        out.extend(body);
        out
    }

    pub(crate) fn event(mask: u64, infos: &[Vec<u8>]) -> Vec<u8> {
        let body: Vec<u8> = infos.concat();
        let mut out = Vec::new();
        out.extend_from_slice(&((METADATA_BYTES + body.len()) as u32).to_ne_bytes());
        out.push(libc::FANOTIFY_METADATA_VERSION);
        out.push(0);
        out.extend_from_slice(&(METADATA_BYTES as u16).to_ne_bytes());
        out.extend_from_slice(&mask.to_ne_bytes());
        out.extend_from_slice(&libc::FAN_NOFD.to_ne_bytes());
        out.extend_from_slice(&1234i32.to_ne_bytes()); // pid
        out.extend(body);
        out
    }

    #[test]
    fn decodes_dirent_events_and_rename_records() {
        let mut buf = event(libc::FAN_CREATE, &[info(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, &[7; 8], Some(b"a.txt"))]);
        buf.extend(event(
            libc::FAN_RENAME | libc::FAN_ONDIR,
            &[
                info(libc::FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, &[1; 12], Some(b"old")),
                info(libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, &[2; 12], Some(b"new")),
            ],
        ));
        buf.extend(event(libc::FAN_Q_OVERFLOW, &[]));
        let events: Vec<FanEvent<'_>> = FanEvents::new(&buf).collect::<Result<_, _>>().expect("decodes");
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].mask, libc::FAN_CREATE);
        assert_eq!(events[0].fd, libc::FAN_NOFD);
        assert_eq!(events[0].infos[0].name, b"a.txt");
        assert_eq!(events[0].infos[0].handle_bytes(), &[7; 8]);
        assert_eq!(events[0].infos[0].handle_type(), 1);
        assert_eq!(events[1].infos.len(), 2);
        assert_eq!(events[1].infos[1].info_type, libc::FAN_EVENT_INFO_TYPE_NEW_DFID_NAME);
        assert_eq!(events[1].infos[1].name, b"new");
        assert!(events[2].infos.is_empty());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let buf = event(libc::FAN_CREATE, &[info(libc::FAN_EVENT_INFO_TYPE_DFID_NAME, &[7; 8], Some(b"a.txt"))]);
        for cut in 1..buf.len() {
            let decoded: Vec<_> = FanEvents::new(&buf[..cut]).collect();
            assert!(decoded.iter().any(Result::is_err), "cut at {cut} decoded as {decoded:?}");
        }
        let mut bad_version = buf.clone();
        bad_version[4] = 99;
        assert_eq!(FanEvents::new(&bad_version).next(), Some(Err(DecodeError::Version(99))));
        let mut huge_handle = buf;
        let at = METADATA_BYTES + INFO_HEADER_BYTES + FSID_BYTES;
        huge_handle[at..at + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert_eq!(FanEvents::new(&huge_handle).next(), Some(Err(DecodeError::Truncated)));
    }
}
