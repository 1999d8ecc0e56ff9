//! sbc-load: a SIP load generator that runs SIPp XML scenarios on every
//! core, each thread with its own UDP socket and io_uring.
//!
//! The protocol logic is sans-IO ([`engine::Endpoint`]): it takes
//! datagrams and the time and queues what to send, so tests drive it
//! without sockets. [`runtime`] is the io_uring loop around it.
#![deny(unsafe_code)]

pub mod cli;
pub mod countfile;
pub mod distribution;
pub mod engine;
pub mod gso;
pub mod inject;
pub mod media;
pub mod pcap;
pub mod percall;
pub mod rate;
pub mod report;
pub mod rtpcheck;
pub mod run;
pub mod runtime;
pub mod scenario;
pub mod srtp;
pub mod statfile;
pub mod stats;
pub mod steer;
pub mod stream;
pub mod template;
pub mod tls;
pub mod tracefile;
pub mod twin;
pub mod watchdog;

/// Built-in scenarios for `-sn`, shipped as files in `scenarios/` so that
/// stock SIPp runs them too.
pub fn builtin(name: &str) -> Option<&'static str> {
    match name {
        "uac" => Some(include_str!("../scenarios/uac_basic.xml")),
        "uas" => Some(include_str!("../scenarios/uas_basic.xml")),
        "ooc_default" => Some(include_str!("../scenarios/ooc_default.xml")),
        "ooc_dummy" => Some(include_str!("../scenarios/ooc_dummy.xml")),
        _ => None,
    }
}
