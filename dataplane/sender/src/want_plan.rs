//! What the sender sends for each chunk the receiver wants, as pure decisions: a delta
//! against the receiver's previous version, the chunk compressed whole, or raw — and,
//! when raw, from where (the kernel reading the file on a kernel-TLS session, the hashed
//! bytes spliced into the TLS stream, or a frame of its own).
//!
//! The reply handler (`replies.rs`) computes the candidates these functions weigh (it
//! encodes the delta and compresses the chunk) and does the sends; nothing here touches
//! a socket, a file or a codec, so every branch is unit-tested below.

use xtsync_api::Compression;

/// Whether the receiver's previous version may serve as a delta basis: not with
/// compression off (the operator put CPU first), not for a file sent again after a
/// failure (a checksum collision would fail it the same way again), and only when the
/// hashed bytes are still in memory to encode against.
pub(crate) fn delta_basis_usable(compression: Compression, retried: bool, bytes_kept: bool) -> bool {
    compression != Compression::Never && !retried && bytes_kept
}

/// A delta is worth encoding when some of the chunk is copies of the basis.
pub(crate) fn delta_worth_encoding(literal_bytes: usize, chunk_bytes: usize) -> bool {
    literal_bytes < chunk_bytes
}

/// When most of the chunk is copies of the basis the delta wins for sure, and the chunk
/// is not compressed whole a second time.
pub(crate) fn mostly_copies(literal_bytes: usize, chunk_bytes: usize) -> bool {
    literal_bytes < chunk_bytes / 2
}

/// How the whole chunk is encoded, before the delta and it are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WholeChunk {
    /// Sent as it is.
    Raw,
    /// Compressed; `give_up_if_incompressible`: the `auto` policy's probe, which stops
    /// early on data that does not shrink.
    Compress { give_up_if_incompressible: bool },
}

/// The whole-chunk encoding under `compression`. `have_bytes`: the hashed bytes are in
/// memory (without them only the file can be sent, raw); `probe_should_try`: the
/// `auto` policy's probe still expects this file to compress.
pub(crate) fn whole_chunk(
    compression: Compression,
    have_bytes: bool,
    mostly_copies: bool,
    probe_should_try: bool,
) -> WholeChunk {
    if mostly_copies || !have_bytes {
        return WholeChunk::Raw;
    }
    match compression {
        Compression::Never => WholeChunk::Raw,
        Compression::Auto if probe_should_try => WholeChunk::Compress { give_up_if_incompressible: true },
        Compression::Auto => WholeChunk::Raw,
        Compression::Always => WholeChunk::Compress { give_up_if_incompressible: false },
    }
}

/// What is known of one wanted chunk once its candidates are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkFacts {
    /// Bytes of the encoded delta, if one was encoded.
    pub delta_bytes: Option<usize>,
    /// Bytes of the whole chunk as it would be sent (compressed or raw).
    pub whole_bytes: usize,
    /// The whole chunk stays raw (not compressed, or compression gave up).
    pub whole_is_raw: bool,
    /// The hashed bytes are in memory.
    pub have_bytes: bool,
    /// The file may be read by the kernel for this chunk (a kernel-TLS session, and the
    /// file is still the one that was hashed or no bytes were kept).
    pub file_readable: bool,
    /// The session sends file ranges (kernel TLS): frames must keep their order with
    /// the kernel's file sends.
    pub kernel_session: bool,
}

/// How one wanted chunk goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// The delta, in a frame of its own.
    Delta,
    /// Raw, the kernel reading it from the file between a frame's head and tail.
    RawFromFile,
    /// Raw, written from the hashed bytes with no copy into a frame.
    RawSpliced,
    /// Raw or compressed, copied into a frame of its own.
    Frame,
}

/// Where frames of their own go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameSink {
    /// Queued with the kernel's file sends, in their order.
    WithFileSends,
    /// Sent directly.
    Direct,
}

/// A wanted chunk that has neither bytes in memory nor a file to send from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NothingToSend;

/// The route of one wanted chunk.
pub(crate) fn route(f: ChunkFacts) -> Result<Route, NothingToSend> {
    if let Some(delta_bytes) = f.delta_bytes {
        if f.have_bytes && delta_bytes < f.whole_bytes {
            return Ok(Route::Delta);
        }
    }
    match (f.whole_is_raw, f.file_readable, f.have_bytes) {
        (true, true, _) => Ok(Route::RawFromFile),
        (true, false, true) if !f.kernel_session => Ok(Route::RawSpliced),
        (_, _, true) => Ok(Route::Frame),
        (_, _, false) => Err(NothingToSend),
    }
}

/// Where a frame of its own goes on a session.
pub(crate) fn frame_sink(kernel_session: bool) -> FrameSink {
    if kernel_session {
        FrameSink::WithFileSends
    } else {
        FrameSink::Direct
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> ChunkFacts {
        ChunkFacts {
            delta_bytes: None,
            whole_bytes: 65_536,
            whole_is_raw: true,
            have_bytes: true,
            file_readable: false,
            kernel_session: false,
        }
    }

    #[test]
    fn a_delta_is_sent_only_when_smaller_than_the_whole_chunk_as_it_would_go() {
        let smaller = ChunkFacts { delta_bytes: Some(1_000), ..facts() };
        assert_eq!(route(smaller), Ok(Route::Delta));
        let larger = ChunkFacts { delta_bytes: Some(70_000), ..facts() };
        assert_eq!(route(larger), Ok(Route::RawSpliced));
        // Against the compressed size, not the raw one.
        let beaten = ChunkFacts { delta_bytes: Some(9_000), whole_bytes: 8_000, whole_is_raw: false, ..facts() };
        assert_eq!(route(beaten), Ok(Route::Frame));
        let equal = ChunkFacts { delta_bytes: Some(8_000), whole_bytes: 8_000, whole_is_raw: false, ..facts() };
        assert_eq!(route(equal), Ok(Route::Frame));
    }

    #[test]
    fn no_delta_with_compression_off_for_a_retried_file_or_without_the_bytes() {
        assert!(delta_basis_usable(Compression::Auto, false, true));
        assert!(delta_basis_usable(Compression::Always, false, true));
        assert!(!delta_basis_usable(Compression::Never, false, true));
        assert!(!delta_basis_usable(Compression::Auto, true, true));
        assert!(!delta_basis_usable(Compression::Auto, false, false));
    }

    #[test]
    fn a_delta_is_encoded_when_any_of_the_chunk_is_copies_and_wins_outright_past_half() {
        assert!(delta_worth_encoding(65_535, 65_536));
        assert!(!delta_worth_encoding(65_536, 65_536));
        assert!(mostly_copies(32_767, 65_536));
        assert!(!mostly_copies(32_768, 65_536));
    }

    #[test]
    fn the_whole_chunk_is_compressed_by_policy_and_never_when_the_delta_wins_outright() {
        use WholeChunk::*;
        assert_eq!(whole_chunk(Compression::Never, true, false, true), Raw);
        assert_eq!(whole_chunk(Compression::Always, true, false, false), Compress { give_up_if_incompressible: false });
        assert_eq!(whole_chunk(Compression::Auto, true, false, true), Compress { give_up_if_incompressible: true });
        // The probe found this file incompressible: auto stops trying.
        assert_eq!(whole_chunk(Compression::Auto, true, false, false), Raw);
        assert_eq!(whole_chunk(Compression::Always, true, true, true), Raw);
        // Without the bytes only the file can go, as it is.
        assert_eq!(whole_chunk(Compression::Always, false, false, true), Raw);
    }

    #[test]
    fn on_kernel_tls_a_raw_chunk_is_read_from_the_file_and_other_frames_keep_its_order() {
        let ktls = ChunkFacts { file_readable: true, kernel_session: true, ..facts() };
        assert_eq!(route(ktls), Ok(Route::RawFromFile));
        // The file changed since it was hashed: the kept bytes go, in a frame of their
        // own queued with the file sends (never spliced past them).
        let changed = ChunkFacts { file_readable: false, kernel_session: true, ..facts() };
        assert_eq!(route(changed), Ok(Route::Frame));
        assert_eq!(frame_sink(true), FrameSink::WithFileSends);
        // A compressed chunk is never read from the file.
        let compressed = ChunkFacts { whole_is_raw: false, whole_bytes: 10_000, ..ktls };
        assert_eq!(route(compressed), Ok(Route::Frame));
    }

    #[test]
    fn on_userspace_tls_raw_chunks_are_spliced_and_frames_go_directly() {
        assert_eq!(route(facts()), Ok(Route::RawSpliced));
        assert_eq!(frame_sink(false), FrameSink::Direct);
    }

    #[test]
    fn a_chunk_with_no_bytes_and_no_readable_file_is_an_error_not_a_send() {
        let nothing = ChunkFacts { have_bytes: false, ..facts() };
        assert_eq!(route(nothing), Err(NothingToSend));
        // Without the bytes a delta cannot have been encoded against them.
        let stale_delta = ChunkFacts { have_bytes: false, delta_bytes: Some(10), ..facts() };
        assert_eq!(route(stale_delta), Err(NothingToSend));
        let from_file = ChunkFacts { have_bytes: false, file_readable: true, kernel_session: true, ..facts() };
        assert_eq!(route(from_file), Ok(Route::RawFromFile));
    }
}
