//! SIP message layer: a lazy, zero-copy parser and a writer.
//!
//! Parsing happens in two steps. [`Message::parse`] frames the message and
//! indexes its headers (names classified, compact forms and case folded);
//! [`Request::parse`] / [`Response::parse`] then parse only the headers every
//! decision needs (Via, From, To, Call-ID, CSeq, Max-Forwards). Anything else
//! is parsed on demand from the slices the message keeps.

pub mod digest;
mod header;
mod message;
mod method;
mod name_addr;
mod request;
pub(crate) mod scan;
pub mod stream;
mod uri;
mod via;
mod writer;

pub use header::HeaderName;
pub use message::{Header, MAX_HEADERS, Message, ParseError, RequestLine, StartLine, StatusLine};
pub use method::Method;
pub use name_addr::{NameAddr, NameAddrError};
pub use request::{CSeq, MAX_CSEQ, Request, RequestError, Response};
pub use scan::{CommaList, Params};

/// A decimal header value (Expires, a Contact's `expires`), white space
/// around it allowed; `None` when it is not one or overflows.
pub fn scan_decimal(value: &[u8]) -> Option<u64> {
    scan::parse_decimal(value.trim_ascii())
}
pub use uri::{Scheme, Uri, UriError, escape_user, host_ip, parse_hostport};
pub use via::{BRANCH_COOKIE, Via, ViaError, split_values as via_values};
pub use writer::{Writer, buffer, put_ip, put_socket_addr, put_unfolded, recycle, seal};
