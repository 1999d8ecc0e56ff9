//! SBC data plane: the I/O layer. Thread-per-core shards, each with its own
//! io_uring, SIP sockets, media ports and AF_XDP socket, driving one
//! [`sbc_core::b2bua::Engine`] each. The protocol logic lives in `sbc-core`,
//! which cannot name a socket.
#![deny(unsafe_code)]

pub mod shard;
pub mod tls;
