//! The frame kinds: the second byte of every frame header.

pub const HELLO: u8 = 1;
pub const HELLO_ACK: u8 = 2;
pub const ENTRIES: u8 = 3;
pub const ENTRIES_REPLY: u8 = 4;
pub const FILE_BEGIN: u8 = 5;
pub const SEGMENT: u8 = 6;
pub const WANT: u8 = 7;
pub const CHUNK_DATA: u8 = 8;
pub const FILE_END: u8 = 9;
pub const FILE_DONE: u8 = 10;
pub const END_OF_PASS: u8 = 11;
pub const PASS_DONE: u8 = 12;
pub const ERROR: u8 = 13;
pub const READY: u8 = 14;
/// Another frame, zstd-compressed (see `compressed.rs`).
pub const COMPRESSED: u8 = 15;
