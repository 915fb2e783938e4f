//! Kernel TLS hand-off. After a rustls handshake the session's traffic secrets are
//! installed in the socket (`TCP_ULP "tls"`, then `TLS_TX` and `TLS_RX`), and from then
//! on plain reads and writes on the socket are encrypted and decrypted by the kernel.
//! This module works on a raw socket and a finished rustls connection; it knows no
//! async runtime. How the bytes of `crypto_info` are laid out is pure code
//! ([`crypto_info`]), tested without a kernel.
//!
//! Safety of the hand-off: rustls must not hold application data that it read past
//! the handshake. The wire protocol guarantees it (the target speaks first, after the
//! handshake, and the target's TLS 1.3 config sends no session tickets); the caller
//! still drains any plaintext rustls decrypted ([`HandOff::early_plaintext`]).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd};

use rustls::{ConnectionTrafficSecrets, ProtocolVersion, SupportedCipherSuite};

const SOL_TLS: libc::c_int = 282;
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
const TLS_SET_RECORD_TYPE: libc::c_int = 1;
const TLS_GET_RECORD_TYPE: libc::c_int = 2;
const TLS_1_3_VERSION: u16 = 0x0304;
const TLS_CIPHER_AES_GCM_128: u16 = 51;
const TLS_CIPHER_AES_GCM_256: u16 = 52;
const TLS_CIPHER_CHACHA20_POLY1305: u16 = 54;
/// Room for one control message with one byte of data (CMSG_SPACE(1) is 24 on 64-bit).
const CONTROL_WORDS: usize = 4;
/// TLS record content type of alerts.
const CONTENT_TYPE_ALERT: u8 = 21;

/// Which code encrypts a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsPath {
    Kernel,
    Userspace,
}

impl TlsPath {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsPath::Kernel => "kernel",
            TlsPath::Userspace => "userspace",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KtlsError {
    #[error("the kernel has no TLS upper-layer protocol (setsockopt TCP_ULP \"tls\": {0}); load the `tls` module or set transfer.ktls to auto/off")]
    Unavailable(io::Error),
    #[error("cipher suite {0} has no kernel TLS equivalent")]
    UnsupportedCipher(String),
    #[error("protocol version {0:?} has no kernel TLS equivalent")]
    UnsupportedVersion(ProtocolVersion),
    #[error("kernel TLS refused for this session: {0}")]
    Refused(String),
    #[error("the TLS handshake is not finished")]
    HandshakeUnfinished,
    #[error("extracting the session keys from rustls: {0}")]
    Secrets(rustls::Error),
    #[error("the kernel refused the {direction} keys: {error}")]
    Install { direction: &'static str, error: io::Error },
}

/// A kernel TLS cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelCipher {
    AesGcm128,
    AesGcm256,
    Chacha20Poly1305,
}

/// The cipher, key and 12-byte IV of one direction of a rustls session.
pub fn traffic_keys(secrets: &ConnectionTrafficSecrets) -> Result<(KernelCipher, &[u8], &[u8]), KtlsError> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => Ok((KernelCipher::AesGcm128, key.as_ref(), iv.as_ref())),
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => Ok((KernelCipher::AesGcm256, key.as_ref(), iv.as_ref())),
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
            Ok((KernelCipher::Chacha20Poly1305, key.as_ref(), iv.as_ref()))
        }
        _ => Err(KtlsError::UnsupportedCipher("a suite without a kernel TLS equivalent".into())),
    }
}

/// The bytes of a `struct tls12_crypto_info_*` (include/uapi/linux/tls.h) for one
/// direction of a **TLS 1.3** session: version, cipher, then iv, key, salt and record
/// sequence number. `iv` is the session's 12-byte IV, into which the kernel XORs the
/// sequence number, as rustls does.
///
/// TLS 1.2 is deliberately not handed off: for AES-GCM the kernel sends
/// `crypto_info.iv` as the first explicit nonce and increments it, while rustls XORs
/// the sequence number into its IV — the kernel's first record would reuse the nonce of
/// the Finished message under the same key.
pub fn crypto_info(sequence: u64, cipher: KernelCipher, key: &[u8], iv: &[u8]) -> Result<Vec<u8>, KtlsError> {
    let version = TLS_1_3_VERSION;
    let (cipher, key_bytes, salt_bytes) = match cipher {
        KernelCipher::AesGcm128 => (TLS_CIPHER_AES_GCM_128, 16, 4),
        KernelCipher::AesGcm256 => (TLS_CIPHER_AES_GCM_256, 32, 4),
        KernelCipher::Chacha20Poly1305 => (TLS_CIPHER_CHACHA20_POLY1305, 32, 0),
    };
    if key.len() != key_bytes || iv.len() != 12 {
        return Err(KtlsError::UnsupportedCipher(format!(
            "cipher {cipher}: key of {} bytes, IV of {}",
            key.len(),
            iv.len()
        )));
    }
    // AES-GCM: the first 4 bytes of the IV are the implicit salt, the kernel's `iv`
    // field is the other 8. ChaCha20-Poly1305 takes all 12 as `iv` and has no salt.
    let (salt, iv) = iv.split_at(salt_bytes);
    let mut info = Vec::with_capacity(4 + iv.len() + key.len() + salt.len() + 8);
    info.extend_from_slice(&version.to_ne_bytes());
    info.extend_from_slice(&cipher.to_ne_bytes());
    info.extend_from_slice(iv);
    info.extend_from_slice(key);
    info.extend_from_slice(salt);
    info.extend_from_slice(&sequence.to_be_bytes());
    Ok(info)
}

/// The kernel cipher of a TLS 1.3 suite; `None` for TLS 1.2 suites and suites the
/// kernel lacks (checked before the keys are extracted, because extraction consumes the
/// rustls connection).
pub fn kernel_cipher(suite: SupportedCipherSuite) -> Option<KernelCipher> {
    use rustls::CipherSuite::*;
    match suite.suite() {
        TLS13_AES_128_GCM_SHA256 => Some(KernelCipher::AesGcm128),
        TLS13_AES_256_GCM_SHA384 => Some(KernelCipher::AesGcm256),
        TLS13_CHACHA20_POLY1305_SHA256 => Some(KernelCipher::Chacha20Poly1305),
        _ => None,
    }
}

/// The ciphers this kernel takes keys for (from [`probe`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelCiphers {
    pub aes_gcm_128: bool,
    pub aes_gcm_256: bool,
    pub chacha20_poly1305: bool,
}

impl KernelCiphers {
    pub fn has(&self, cipher: KernelCipher) -> bool {
        match cipher {
            KernelCipher::AesGcm128 => self.aes_gcm_128,
            KernelCipher::AesGcm256 => self.aes_gcm_256,
            KernelCipher::Chacha20Poly1305 => self.chacha20_poly1305,
        }
    }
    pub fn any(&self) -> bool {
        self.aes_gcm_128 || self.aes_gcm_256 || self.chacha20_poly1305
    }
}

fn setsockopt(fd: BorrowedFd<'_>, level: libc::c_int, name: libc::c_int, value: &[u8]) -> io::Result<()> {
    // SAFETY: `value` is a valid buffer of the given length for the duration of the call.
    let rc =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), value.len() as libc::socklen_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Attaches the TLS upper-layer protocol. Without keys the socket still behaves as
/// plain TCP, so this is the safe first step: if it fails, rustls keeps the session.
pub fn attach_ulp(fd: BorrowedFd<'_>) -> Result<(), KtlsError> {
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_ULP, b"tls").map_err(KtlsError::Unavailable)
}

/// What is left of a session once its keys are in the kernel.
pub struct HandOff {
    /// Application data rustls had already decrypted; it comes before anything read
    /// from the socket.
    pub early_plaintext: Vec<u8>,
    pub suite: String,
}

/// Moves a finished rustls session into the kernel: drains decrypted plaintext,
/// extracts the keys and installs them for both directions. `fd` must be the socket
/// under `conn`, with the ULP already attached ([`attach_ulp`]).
///
/// After a failure here the rustls connection is gone: the session must be closed.
pub fn hand_off(fd: BorrowedFd<'_>, mut conn: rustls::Connection) -> Result<HandOff, KtlsError> {
    if conn.is_handshaking() {
        return Err(KtlsError::HandshakeUnfinished);
    }
    let version = conn.protocol_version().ok_or(KtlsError::HandshakeUnfinished)?;
    if version != ProtocolVersion::TLSv1_3 {
        return Err(KtlsError::UnsupportedVersion(version));
    }
    let suite = conn.negotiated_cipher_suite().ok_or(KtlsError::HandshakeUnfinished)?;
    if kernel_cipher(suite).is_none() {
        return Err(KtlsError::UnsupportedCipher(format!("{:?}", suite.suite())));
    }
    let mut early_plaintext = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match conn.reader().read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => early_plaintext.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => break,
        }
    }
    let secrets = conn.dangerous_extract_secrets().map_err(KtlsError::Secrets)?;
    let (cipher, key, iv) = traffic_keys(&secrets.tx.1)?;
    let tx = crypto_info(secrets.tx.0, cipher, key, iv)?;
    let (cipher, key, iv) = traffic_keys(&secrets.rx.1)?;
    let rx = crypto_info(secrets.rx.0, cipher, key, iv)?;
    setsockopt(fd, SOL_TLS, TLS_TX, &tx).map_err(|error| KtlsError::Install { direction: "transmit", error })?;
    setsockopt(fd, SOL_TLS, TLS_RX, &rx).map_err(|error| KtlsError::Install { direction: "receive", error })?;
    Ok(HandOff { early_plaintext, suite: format!("{:?}", suite.suite()) })
}

/// A `msghdr` over one iovec with room for one record-type control message (one byte
/// of data). The caller keeps `iov` and `control` alive while the header is in use;
/// `control` is made of u64 words because it is read as a `cmsghdr` (8-byte aligned).
fn record_type_msghdr(iov: &mut libc::iovec, control: &mut [u64; CONTROL_WORDS]) -> libc::msghdr {
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(1) } as usize;
    debug_assert!(space <= std::mem::size_of_val(control));
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    msg
}

/// Sends a TLS alert record (level, description) through a kTLS socket without
/// blocking: used for close_notify at the end of a session.
pub fn send_alert(fd: BorrowedFd<'_>, level: u8, description: u8) -> io::Result<()> {
    let mut payload = [level, description];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
    let mut control = [0u64; CONTROL_WORDS];
    let msg = record_type_msghdr(&mut iov, &mut control);
    // SAFETY: the control buffer has room for one header with one byte of data.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = SOL_TLS;
        (*cmsg).cmsg_type = TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(cmsg) = CONTENT_TYPE_ALERT;
    }
    // SAFETY: msg points at valid iovec and control buffers.
    let rc = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A record that is not application data, read after a plain read failed with EIO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlRecord {
    /// The peer closed its direction cleanly.
    CloseNotify,
    /// Another alert: (level, description).
    Alert(u8, u8),
    /// A handshake message (for example a TLS 1.3 KeyUpdate), which this hand-off does
    /// not support.
    Other(u8),
}

/// Reads the pending non-data record from a kTLS socket (`recvmsg` with a record
/// type control message), without blocking.
pub fn read_control_record(fd: BorrowedFd<'_>) -> io::Result<ControlRecord> {
    let mut payload = [0u8; 64];
    let mut iov = libc::iovec { iov_base: payload.as_mut_ptr().cast(), iov_len: payload.len() };
    let mut control = [0u64; CONTROL_WORDS];
    let mut msg = record_type_msghdr(&mut iov, &mut control);
    // SAFETY: msg points at valid buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if msg.msg_flags & (libc::MSG_CTRUNC | libc::MSG_TRUNC) != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "kTLS control record truncated"));
    }
    // SAFETY: the kernel filled `control`; CMSG_FIRSTHDR checks msg_controllen.
    let record_type = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() || (*cmsg).cmsg_level != SOL_TLS || (*cmsg).cmsg_type != TLS_GET_RECORD_TYPE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "kTLS record without a record type"));
        }
        *libc::CMSG_DATA(cmsg)
    };
    Ok(classify_record(record_type, &payload[..n as usize]))
}

/// Pure: what a non-data record means.
pub fn classify_record(record_type: u8, payload: &[u8]) -> ControlRecord {
    match (record_type, payload) {
        (CONTENT_TYPE_ALERT, [_, 0]) => ControlRecord::CloseNotify,
        (CONTENT_TYPE_ALERT, [level, description]) => ControlRecord::Alert(*level, *description),
        (other, _) => ControlRecord::Other(other),
    }
}

/// Which ciphers this kernel takes TLS 1.3 keys for: per cipher, attaches the ULP and
/// installs dummy keys in both directions on a loopback connection made for the
/// purpose. Run once at start, so that `transfer.ktls: on` fails loudly and `auto` logs
/// its choice once. An error when the kernel has no TLS at all.
pub fn probe() -> Result<KernelCiphers, KtlsError> {
    let mut found = KernelCiphers::default();
    let mut last_refusal = None;
    for (cipher, key_bytes) in
        [(KernelCipher::AesGcm128, 16), (KernelCipher::AesGcm256, 32), (KernelCipher::Chacha20Poly1305, 32)]
    {
        match probe_cipher(cipher, key_bytes) {
            Ok(()) => match cipher {
                KernelCipher::AesGcm128 => found.aes_gcm_128 = true,
                KernelCipher::AesGcm256 => found.aes_gcm_256 = true,
                KernelCipher::Chacha20Poly1305 => found.chacha20_poly1305 = true,
            },
            Err(e @ KtlsError::Unavailable(_)) => return Err(e),
            Err(e) => last_refusal = Some(e),
        }
    }
    match last_refusal {
        Some(e) if !found.any() => Err(e),
        _ => Ok(found),
    }
}

fn probe_cipher(cipher: KernelCipher, key_bytes: usize) -> Result<(), KtlsError> {
    use std::os::fd::AsFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(KtlsError::Unavailable)?;
    let addr = listener.local_addr().map_err(KtlsError::Unavailable)?;
    let client = std::net::TcpStream::connect(addr).map_err(KtlsError::Unavailable)?;
    let _server = listener.accept().map_err(KtlsError::Unavailable)?;
    attach_ulp(client.as_fd())?;
    let info = crypto_info(0, cipher, &vec![0; key_bytes], &[0; 12])?;
    setsockopt(client.as_fd(), SOL_TLS, TLS_TX, &info)
        .map_err(|error| KtlsError::Install { direction: "transmit", error })?;
    setsockopt(client.as_fd(), SOL_TLS, TLS_RX, &info)
        .map_err(|error| KtlsError::Install { direction: "receive", error })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_gcm_128_layout_matches_the_kernel_struct() {
        let key: Vec<u8> = (0..16).collect();
        let iv: Vec<u8> = (100..112).collect();
        let info = crypto_info(0x0102_0304_0506_0708, KernelCipher::AesGcm128, &key, &iv).unwrap();
        // struct tls12_crypto_info_aes_gcm_128: 4 + iv 8 + key 16 + salt 4 + rec_seq 8.
        assert_eq!(info.len(), 40);
        assert_eq!(&info[..2], &0x0304u16.to_ne_bytes());
        assert_eq!(&info[2..4], &51u16.to_ne_bytes());
        assert_eq!(&info[4..12], &iv[4..], "explicit IV = last 8 bytes");
        assert_eq!(&info[12..28], &key[..], "key");
        assert_eq!(&info[28..32], &iv[..4], "salt = first 4 bytes of the IV");
        assert_eq!(&info[32..40], &[1, 2, 3, 4, 5, 6, 7, 8], "record sequence, big-endian");
    }

    #[test]
    fn chacha_and_aes256_have_their_sizes() {
        let key = [7u8; 32];
        let iv = [9u8; 12];
        let info = crypto_info(5, KernelCipher::Chacha20Poly1305, &key, &iv).unwrap();
        assert_eq!(info.len(), 4 + 12 + 32 + 8);
        assert_eq!(&info[..2], &0x0304u16.to_ne_bytes());
        assert_eq!(&info[2..4], &54u16.to_ne_bytes());
        assert_eq!(&info[4..16], &iv, "ChaCha20-Poly1305 takes the whole IV, no salt");
        let aes256 = crypto_info(0, KernelCipher::AesGcm256, &key, &iv).unwrap();
        assert_eq!(aes256.len(), 4 + 8 + 32 + 4 + 8);
        assert_eq!(&aes256[2..4], &52u16.to_ne_bytes());
        assert!(crypto_info(0, KernelCipher::AesGcm128, &key, &iv).is_err(), "a 32-byte key is not AES-128");
    }

    #[test]
    fn only_tls13_suites_map_to_kernel_ciphers() {
        use rustls::crypto::ring::cipher_suite::*;
        assert_eq!(kernel_cipher(TLS13_AES_256_GCM_SHA384), Some(KernelCipher::AesGcm256));
        assert_eq!(kernel_cipher(TLS13_AES_128_GCM_SHA256), Some(KernelCipher::AesGcm128));
        assert_eq!(kernel_cipher(TLS13_CHACHA20_POLY1305_SHA256), Some(KernelCipher::Chacha20Poly1305));
        // TLS 1.2 keeps rustls: the kernel's TLS 1.2 AES-GCM nonce would repeat rustls'.
        assert_eq!(kernel_cipher(TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384), None);
        assert_eq!(kernel_cipher(TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256), None);
    }

    #[test]
    fn control_records_are_classified() {
        assert_eq!(classify_record(21, &[1, 0]), ControlRecord::CloseNotify);
        assert_eq!(classify_record(21, &[2, 40]), ControlRecord::Alert(2, 40));
        assert_eq!(classify_record(22, &[24, 0, 0, 1, 0]), ControlRecord::Other(22));
    }

    #[test]
    fn the_probe_agrees_with_the_kernel() {
        // Attaching the ULP loads the `tls` module when the kernel has it, and a loaded
        // module shows /proc/net/tls_stat: the probe succeeds exactly then.
        let probed = probe();
        let kernel_has_tls = std::path::Path::new("/proc/net/tls_stat").exists();
        match probed {
            Ok(ciphers) => {
                assert!(kernel_has_tls, "probe succeeded but /proc/net/tls_stat is missing");
                assert!(ciphers.has(KernelCipher::AesGcm128), "every kTLS kernel has AES-128-GCM: {ciphers:?}");
            }
            Err(e) => {
                assert!(!kernel_has_tls, "kernel has TLS but the probe failed: {e}");
                assert!(e.to_string().contains("tls"), "the error names what is missing: {e}");
            }
        }
    }
}
