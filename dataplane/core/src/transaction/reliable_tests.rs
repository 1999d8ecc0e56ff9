//! The four transactions over a reliable transport (TCP, TLS, WS): no
//! retransmission timers (A, E, G), and the absorbing timers (D, I, J, K)
//! are zero, so a transaction ends as soon as it completes. Each test runs
//! the same flow over UDP too, so it can tell the two apart.

use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::net::{ConnId, Flow, LocalId, Outbox, Transport};

fn flow(transport: Transport) -> Flow {
    Flow {
        transport,
        conn: NonZeroU64::new(3)
            .map(ConnId)
            .filter(|_| transport.is_reliable()),
        ..Flow::udp("192.0.2.1:5060".parse().unwrap(), LocalId(0))
    }
}

/// Messages sent after the first one, up to `end`, firing every deadline.
fn resent(
    next: &mut dyn FnMut() -> Option<Instant>,
    fire: &mut dyn FnMut(Instant, &mut Outbox) -> Option<TxEvent>,
    end: Instant,
) -> (usize, Option<TxEvent>) {
    let mut out = Outbox::default();
    let mut ev = None;
    while let Some(at) = next() {
        if at > end {
            break;
        }
        ev = fire(at, &mut out).or(ev);
        if ev.is_some() {
            break;
        }
    }
    (out.len(), ev)
}

#[test]
fn client_invite_timer_a_only_on_udp_and_timer_d_zero_on_tcp() {
    // RFC 3261 §17.1.1.2.
    let cfg = TimerConfig::default();
    for (transport, resends) in [(Transport::Udp, 6), (Transport::Tcp, 0)] {
        let t0 = Instant::now();
        let mut out = Outbox::default();
        let tx = ClientInvite::start(
            t0,
            &cfg,
            flow(transport),
            Bytes::from_static(b"INVITE"),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        let tx = std::cell::RefCell::new(tx);
        let (sent, ev) = resent(
            &mut || tx.borrow().next_deadline(),
            &mut |at, out| tx.borrow_mut().on_timer(at, out),
            t0 + Duration::from_secs(60),
        );
        assert_eq!(
            (sent, ev),
            (resends, Some(TxEvent::Timeout)),
            "{transport:?}: timer B still ends it"
        );

        // A failure: ACKed, then Completed for timer D.
        let mut out = Outbox::default();
        let mut tx = ClientInvite::start(
            t0,
            &cfg,
            flow(transport),
            Bytes::from_static(b"INVITE"),
            &mut out,
        );
        tx.on_response(t0, &cfg, 486, || Bytes::from_static(b"ACK"), &mut out);
        let d = tx.next_deadline().map(|d| d - t0);
        let want = if transport.is_reliable() {
            Duration::ZERO
        } else {
            Duration::from_secs(32)
        };
        assert_eq!(d, Some(want), "{transport:?}: timer D");
    }
}

#[test]
fn client_non_invite_timer_e_only_on_udp_and_timer_k_zero_on_tcp() {
    // RFC 3261 §17.1.2.2.
    let cfg = TimerConfig::default();
    for (transport, resends) in [(Transport::Udp, 10), (Transport::Tls, 0)] {
        let t0 = Instant::now();
        let mut out = Outbox::default();
        let tx = ClientNonInvite::start(
            t0,
            &cfg,
            flow(transport),
            Bytes::from_static(b"BYE"),
            &mut out,
        );
        let tx = std::cell::RefCell::new(tx);
        let (sent, ev) = resent(
            &mut || tx.borrow().next_deadline(),
            &mut |at, out| tx.borrow_mut().on_timer(at, &cfg, out),
            t0 + Duration::from_secs(60),
        );
        assert_eq!(
            (sent, ev),
            (resends, Some(TxEvent::Timeout)),
            "{transport:?}"
        );

        // After a provisional, E goes on at T2 over UDP only.
        let mut out = Outbox::default();
        let mut tx = ClientNonInvite::start(
            t0,
            &cfg,
            flow(transport),
            Bytes::from_static(b"BYE"),
            &mut out,
        );
        tx.on_response(t0, &cfg, 100);
        let next = tx.next_deadline().map(|d| d - t0);
        let want = if transport.is_reliable() {
            cfg.t1x64()
        } else {
            cfg.t2
        };
        assert_eq!(
            next,
            Some(want),
            "{transport:?}: E (UDP) or F (reliable) next"
        );
        tx.on_response(t0, &cfg, 200);
        let k = tx.next_deadline().map(|d| d - t0);
        let want = if transport.is_reliable() {
            Duration::ZERO
        } else {
            cfg.t4
        };
        assert_eq!(k, Some(want), "{transport:?}: timer K");
    }
}

#[test]
fn server_invite_timer_g_only_on_udp_and_timer_i_zero_on_ws() {
    // RFC 3261 §17.2.1.
    let cfg = TimerConfig::default();
    // G at 0.5, 1.5, 3.5, 7.5 s, then every T2 (4 s) until H at 32 s.
    for (transport, resends) in [(Transport::Udp, 10), (Transport::Ws, 0)] {
        let t0 = Instant::now();
        let mut out = Outbox::default();
        let mut tx = ServerInvite::new(flow(transport));
        assert!(tx.respond(t0, &cfg, 486, Bytes::from_static(b"486"), &mut out));
        let tx = std::cell::RefCell::new(tx);
        let (sent, ev) = resent(
            &mut || tx.borrow().next_deadline(),
            &mut |at, out| tx.borrow_mut().on_timer(at, &cfg, out),
            t0 + Duration::from_secs(60),
        );
        assert_eq!(sent, resends, "{transport:?}: G retransmissions");
        assert_eq!(
            ev,
            Some(TxEvent::Timeout),
            "{transport:?}: timer H still runs"
        );

        let mut out = Outbox::default();
        let mut tx = ServerInvite::new(flow(transport));
        tx.respond(t0, &cfg, 486, Bytes::from_static(b"486"), &mut out);
        tx.on_ack(t0, &cfg);
        let i = tx.next_deadline().map(|d| d - t0);
        let want = if transport.is_reliable() {
            Duration::ZERO
        } else {
            cfg.t4
        };
        assert_eq!(i, Some(want), "{transport:?}: timer I");
    }
}

#[test]
fn server_non_invite_timer_j_zero_on_tcp() {
    // RFC 3261 §17.2.2.
    let cfg = TimerConfig::default();
    for transport in [Transport::Udp, Transport::Tcp] {
        let t0 = Instant::now();
        let mut out = Outbox::default();
        let mut tx = ServerNonInvite::new(flow(transport));
        tx.respond(t0, &cfg, 200, Bytes::from_static(b"200"), &mut out);
        let j = tx.next_deadline().map(|d| d - t0);
        let want = if transport.is_reliable() {
            Duration::ZERO
        } else {
            cfg.t1x64()
        };
        assert_eq!(j, Some(want), "{transport:?}: timer J");
        assert_eq!(tx.on_timer(t0 + want), Some(TxEvent::Terminated));
    }
}
