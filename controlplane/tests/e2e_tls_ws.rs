//! End-to-end: SIP over TLS, WebSocket and secure WebSocket through the
//! real `sbc` binary, with peers written here on rustls and tungstenite. A
//! phone registers over TLS (digest), is rung over its connection by a UDP
//! carrier, and calls that carrier itself; WebRTC-style phones do the same
//! over WSS and WS and call each other; a UDP PBX calls an ITSP reached
//! over mutual TLS (config/examples/tls-trunk.toml), whose own connections
//! must present a certificate; a reload serves a new certificate while
//! established connections stay; bad upgrades and garbage are refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

const LIMIT: Duration = Duration::from_secs(60);

fn certs() -> std::path::PathBuf {
    repo().join("config/examples/certs")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn chain(name: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(certs().join(format!("{name}.crt")))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(name: &str) -> PrivateKeyDer<'static> {
    PrivateKeyDer::from_pem_file(certs().join(format!("{name}.key"))).unwrap()
}

fn ca() -> Arc<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for c in chain("ca") {
        roots.add(c).unwrap();
    }
    Arc::new(roots)
}

/// A client config trusting the test CA, presenting `identity` if given.
fn client_config(identity: Option<&str>) -> Arc<ClientConfig> {
    client_config_of(identity, rustls::DEFAULT_VERSIONS)
}

/// [`client_config`] offering only `versions`.
fn client_config_of(
    identity: Option<&str>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca());
    Arc::new(match identity {
        None => builder.with_no_client_auth(),
        Some(name) => builder
            .with_client_auth_cert(chain(name), key(name))
            .unwrap(),
    })
}

/// One SIP message off a stream (skipping keepalive CRLFs), or `None` when
/// the stream ends or fails, or nothing whole arrives by `deadline`.
fn read_message(stream: &mut impl Read, buf: &mut Vec<u8>, deadline: Instant) -> Option<String> {
    loop {
        while buf.starts_with(b"\r\n") {
            buf.drain(..2);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = format!("{}\r\n", String::from_utf8_lossy(&buf[..end]));
            let len: usize = header(&head, "Content-Length")
                .or_else(|| header(&head, "l"))
                .map_or(0, |v| v.parse().unwrap());
            if buf.len() >= end + 4 + len {
                let msg: Vec<u8> = buf.drain(..end + 4 + len).collect();
                return Some(String::from_utf8_lossy(&msg).into_owned());
            }
        }
        let mut tmp = [0u8; 4096];
        match stream.read(&mut tmp) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() > deadline {
                    return None;
                }
            }
            Err(_) => return None,
        }
    }
}

/// The Authorization (or Proxy-Authorization) value answering the MD5
/// challenge in `response` for `method` `uri`.
fn answer(response: &str, (user, password): (&str, &str), method: &str, uri: &str) -> String {
    let challenge = response
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| {
            let n = n.trim();
            n.eq_ignore_ascii_case("WWW-Authenticate")
                || n.eq_ignore_ascii_case("Proxy-Authenticate")
        })
        .map(|(_, v)| v.trim())
        .find(|v| digest_param(v, "algorithm").is_none_or(|a| a.eq_ignore_ascii_case("MD5")))
        .unwrap_or_else(|| panic!("no MD5 challenge in {response}"));
    let realm = digest_param(challenge, "realm").unwrap();
    let nonce = digest_param(challenge, "nonce").unwrap();
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let cnonce = "0a4f113b";
    let nc = "00000001";
    let digest = md5_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{digest}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"{cnonce}\""
    )
}

fn status(msg: &str) -> u16 {
    msg.strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

type TlsStream = rustls::StreamOwned<ClientConnection, TcpStream>;

/// How a phone's messages travel.
enum Wire {
    Tls(Box<TlsStream>, Vec<u8>),
    Ws(Box<tungstenite::WebSocket<TcpStream>>),
    Wss(Box<tungstenite::WebSocket<TlsStream>>),
}

/// A TCP connection from `from_ip` to `to`, reads timing out quickly.
fn tcp_from(from_ip: &str, to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(from_ip.parse().unwrap(), 0).into())
        .unwrap();
    sock.connect(&to.into()).unwrap();
    let tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    tcp
}

fn tls_to_localhost(tcp: TcpStream) -> TlsStream {
    let conn = ClientConnection::new(
        client_config(None),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// The WebSocket upgrade request of a SIP client (RFC 7118: subprotocol
/// `sip`) for `url`.
fn upgrade_request(url: &str) -> tungstenite::handshake::client::Request {
    use tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    request
}

/// Upgrades `stream` (TCP or TLS) to WebSocket; the upgrade may take a
/// few read timeouts.
fn upgrade<S: Read + Write>(url: &str, stream: S) -> tungstenite::WebSocket<S> {
    use tungstenite::handshake::HandshakeError;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = tungstenite::client::client(upgrade_request(url), stream);
    loop {
        match attempt {
            Ok((ws, response)) => {
                let protocol = response.headers().get("Sec-WebSocket-Protocol");
                assert_eq!(protocol.and_then(|v| v.to_str().ok()), Some("sip"));
                return ws;
            }
            Err(HandshakeError::Interrupted(mid)) if Instant::now() < deadline => {
                attempt = mid.handshake();
            }
            Err(e) => panic!("WebSocket upgrade to {url} failed: {e}"),
        }
    }
}

impl Wire {
    fn send(&mut self, msg: &str) {
        use tungstenite::Message;
        match self {
            Wire::Tls(s, _) => {
                s.write_all(msg.as_bytes()).unwrap();
                s.flush().unwrap();
            }
            Wire::Ws(ws) => ws.send(Message::text(msg)).unwrap(),
            Wire::Wss(ws) => ws.send(Message::text(msg)).unwrap(),
        }
    }

    /// The next SIP message, or `None` by `deadline` or when it ends.
    fn recv(&mut self, deadline: Instant) -> Option<String> {
        fn next<S: Read + Write>(
            ws: &mut tungstenite::WebSocket<S>,
            deadline: Instant,
        ) -> Option<String> {
            loop {
                match ws.read() {
                    Ok(tungstenite::Message::Text(t)) => return Some(t.as_str().to_owned()),
                    Ok(tungstenite::Message::Binary(b)) => {
                        return Some(String::from_utf8_lossy(&b).into_owned());
                    }
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) && Instant::now() < deadline => {}
                    Err(_) => return None,
                }
            }
        }
        match self {
            Wire::Tls(s, buf) => read_message(s, buf, deadline),
            Wire::Ws(ws) => next(ws, deadline),
            Wire::Wss(ws) => next(ws, deadline),
        }
    }

    /// The Via transport token.
    fn token(&self) -> &'static str {
        match self {
            Wire::Tls(..) => "TLS",
            Wire::Ws(_) => "WS",
            Wire::Wss(_) => "WSS",
        }
    }
}

/// A phone on a TLS, WS or WSS connection to the SBC.
struct Phone {
    wire: Wire,
    local: SocketAddr,
    /// Where its Via and Contact say it is: its address over TLS; over
    /// WebSocket a made-up `.invalid` name, as browsers write (RFC 7118
    /// §5.2).
    host: String,
    user: &'static str,
    password: &'static str,
    /// The last CSeq of its registration.
    cseq: u32,
}

impl Phone {
    /// Connects over TLS to `sbc` from `from_ip`.
    fn tls(sbc: SocketAddr, from_ip: &str, user: &'static str, password: &'static str) -> Self {
        Self::tls_on(tcp_from(from_ip, sbc), user, password)
    }

    /// Over TLS on a connection already made.
    fn tls_on(tcp: TcpStream, user: &'static str, password: &'static str) -> Self {
        let local = tcp.local_addr().unwrap();
        Phone {
            wire: Wire::Tls(Box::new(tls_to_localhost(tcp)), Vec::new()),
            local,
            host: local.to_string(),
            user,
            password,
            cseq: 0,
        }
    }

    /// Connects over WebSocket (`secure`: over TLS) to `sbc` from
    /// `from_ip`.
    fn websocket(
        sbc: SocketAddr,
        secure: bool,
        from_ip: &str,
        user: &'static str,
        password: &'static str,
    ) -> Self {
        let tcp = tcp_from(from_ip, sbc);
        let local = tcp.local_addr().unwrap();
        let wire = if secure {
            Wire::Wss(Box::new(upgrade(
                &format!("wss://localhost:{}/", sbc.port()),
                tls_to_localhost(tcp),
            )))
        } else {
            Wire::Ws(Box::new(upgrade(&format!("ws://{sbc}/"), tcp)))
        };
        Phone {
            wire,
            local,
            host: format!("{user}-{}.invalid", local.port()),
            user,
            password,
            cseq: 0,
        }
    }

    fn send(&mut self, msg: &str) {
        self.wire.send(msg);
    }

    fn recv(&mut self) -> Option<String> {
        self.wire.recv(Instant::now() + Duration::from_secs(15))
    }

    /// The next message that satisfies `want`, skipping provisional
    /// responses and anything else.
    fn wait(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            match self.recv() {
                Some(m) if want(&m) => return m,
                Some(_) => {}
                None => break,
            }
        }
        panic!("phone {}: no {what}", self.user);
    }

    fn via(&self, branch: &str) -> String {
        format!(
            "Via: SIP/2.0/{} {};branch=z9hG4bK{branch};rport\r\n",
            self.wire.token(),
            self.host
        )
    }

    fn contact(&self) -> String {
        format!(
            "Contact: <sip:{}@{};transport={}>\r\n",
            self.user,
            self.host,
            self.wire.token().to_ascii_lowercase()
        )
    }

    /// REGISTER, answer the challenge, expect 200.
    fn register(&mut self, sbc: &str) -> String {
        let uri = format!("sip:{sbc}");
        let base = |cseq: u32, branch: &str, auth: &str, me: &Self| {
            format!(
                "REGISTER {uri} SIP/2.0\r\n{}Max-Forwards: 70\r\nFrom: <sip:{user}@{sbc}>;tag=reg1\r\nTo: <sip:{user}@{sbc}>\r\nCall-ID: reg-{user}@test\r\nCSeq: {cseq} REGISTER\r\n{}Expires: 300\r\n{auth}Content-Length: 0\r\n\r\n",
                me.via(branch),
                me.contact(),
                user = me.user
            )
        };
        self.cseq += 2;
        let first = base(self.cseq - 1, &format!("reg{}", self.cseq - 1), "", self);
        self.send(&first);
        let challenge = self.wait("401", |m| status(m) == 401);
        let auth = format!(
            "Authorization: {}\r\n",
            answer(&challenge, (self.user, self.password), "REGISTER", &uri)
        );
        let second = base(self.cseq, &format!("reg{}", self.cseq), &auth, self);
        self.send(&second);
        self.wait("final REGISTER response", |m| status(m) >= 200)
    }

    /// Answers an INVITE (received) with 200 and SDP; returns the INVITE.
    fn answer_invite(&mut self, media_port: u16) -> String {
        let invite = self.wait("INVITE", |m| m.starts_with("INVITE "));
        let ip = self.local.ip().to_string();
        let ok = respond(
            &invite,
            200,
            "OK",
            "phone1",
            &self.contact(),
            &sdp(&ip, media_port),
        )
        .replace(
            "Content-Length:",
            "Content-Type: application/sdp\r\nContent-Length:",
        );
        self.send(&ok);
        invite
    }
}

/// The remote-phones example with 2 shards on this test's network.
fn phones_config(net: Net) -> String {
    let mut text = example("remote-phones.toml", net);
    assert!(
        text.contains(&format!("\"tls:{}:5061\"", net.ip(1))),
        "{text}"
    );
    text.push_str(concat!(
        "\n[acl]\nstranger_answers_per_s = 50\n",
        "\n[shards]\ncount = 2\npin_threads = false\n"
    ));
    text.replace(
        "[registrar]\n",
        "[registrar]\nkeepalive = { method = \"off\" }\n",
    )
}

#[test]
fn a_phone_registers_over_tls_is_rung_over_its_connection_and_calls_a_udp_carrier() {
    sipp_installed();
    let net = Net(136);
    let sbc = Sbc::start(net, &phones_config(net));
    let tls_at: SocketAddr = format!("{}:5061", net.ip(1)).parse().unwrap();
    let mut phone = Phone::tls(tls_at, &net.ip(51), "alice-desk", "Desk-9f2k-Alice");
    let ok = phone.register(&net.sbc());
    assert_eq!(status(&ok), 200, "{ok}\n{}", sbc.log());
    let body = registrations(net, |b| b.contains("alice-desk"));
    assert!(body.contains("alice-desk"), "{body}");

    rung_by_the_carrier(net, &sbc, &mut phone, 0);
    calls_the_carrier(net, &sbc, &mut phone, 20);

    assert_eq!(
        sbc.wait_metric("sbc_connections_open{shard=\"0\",transport=\"tls\"}", 1.0)
            + sbc.metric("sbc_connections_open{shard=\"1\",transport=\"tls\"}"),
        1.0,
        "{}",
        sbc.log()
    );
    assert!(sbc.metric_sum("sbc_tls_handshakes_total") >= 1.0);
}

/// alice's number at the carrier.
const DID: &str = "+390212345100";

/// The UDP carrier (sipp) calls alice's DID: the SBC rings `phone` over
/// its connection (its Via names the phone's transport), the phone
/// answers, the carrier hangs up after a moment. `k`: the sipp port block.
fn rung_by_the_carrier(net: Net, sbc: &Sbc, phone: &mut Phone, k: u16) {
    // The UDP carrier calls alice's DID: the SBC rings the phone over its
    // TLS connection (Via says TLS), the phone answers, the carrier's sipp
    // hangs up after a moment.
    let mut args = uac_args(net, &net.ip(20), "uac_basic.xml", DID, 1, 1, k);
    args.extend(["-d".into(), "500".into()]);
    let carrier = Sipp::spawn("carrier", &args);
    let invite = phone.answer_invite(41_000 + u16::from(net.0));
    let via = format!("Via: SIP/2.0/{} ", phone.wire.token());
    assert!(invite.contains(&via), "{invite}");
    // The SBC's Contact names the transport the phone is reached over
    // (RFC 3261 §19.1.1, RFC 7118 §5.4), so the phone's in-dialog
    // requests come back over it.
    let contact = header(&invite, "Contact").unwrap_or_default();
    let transport = format!(";transport={}", phone.wire.token().to_ascii_lowercase());
    assert!(contact.contains(&transport), "{invite}");
    phone.wait("ACK", |m| m.starts_with("ACK "));
    let bye = phone.wait("BYE", |m| m.starts_with("BYE "));
    let ok = respond(&bye, 200, "OK", "phone1", "", "");
    phone.send(&ok);
    let carrier = carrier.wait(LIMIT);
    assert_eq!(
        (carrier.code, carrier.successful),
        (Some(0), 1),
        "{}\n{}",
        carrier.output,
        sbc.log()
    );
}

/// `phone` calls a carrier number: 407, then with credentials the call
/// reaches the carrier (sipp on UDP) and is answered; the phone hangs up.
/// `k`: the sipp port block.
fn calls_the_carrier(net: Net, sbc: &Sbc, phone: &mut Phone, k: u16) {
    let uas = Sipp::spawn("uas", &uas_args(net, &net.ip(20), "uas_answer.xml", 1, k));
    std::thread::sleep(Duration::from_millis(300));
    dial(net, sbc, phone, "+390612345678", "call-out@test");
    let uas = uas.wait(LIMIT);
    assert_eq!((uas.code, uas.successful), (Some(0), 1), "{}", uas.output);
}

/// `phone` calls `number`: 407, then with credentials; the call must be
/// answered; the phone hangs up after a moment.
fn dial(net: Net, sbc: &Sbc, phone: &mut Phone, number: &str, call_id: &str) {
    let user = phone.user;
    let target = format!("sip:{number}@{}", net.sbc());
    let ip = phone.local.ip().to_string();
    let offer = sdp(&ip, 41_500 + u16::from(net.0));
    let invite = |cseq: u32, branch: &str, auth: &str, me: &Phone| {
        format!(
            "INVITE {target} SIP/2.0\r\n{}Max-Forwards: 70\r\nFrom: <sip:{user}@{sbc}>;tag=call1\r\nTo: <sip:{number}@{sbc}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n{}{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{offer}",
            me.via(branch),
            me.contact(),
            offer.len(),
            sbc = net.sbc()
        )
    };
    let first = invite(1, "inv1", "", phone);
    phone.send(&first);
    let challenge = phone.wait("407", |m| status(m) == 407);
    let ack = format!(
        "ACK {target} SIP/2.0\r\n{}Max-Forwards: 70\r\nFrom: <sip:{user}@{sbc}>;tag=call1\r\n{}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        phone.via("inv1"),
        challenge
            .split("\r\n")
            .find(|l| l.to_ascii_lowercase().starts_with("to:"))
            .unwrap(),
        sbc = net.sbc()
    );
    phone.send(&ack);
    let auth = format!(
        "Proxy-Authorization: {}\r\n",
        answer(&challenge, (phone.user, phone.password), "INVITE", &target)
    );
    let second = invite(2, "inv2", &auth, phone);
    phone.send(&second);
    let ok = phone.wait("final INVITE response", |m| status(m) >= 200);
    assert_eq!(status(&ok), 200, "{ok}\n{}", sbc.log());
    let to = ok
        .split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with("to:"))
        .unwrap()
        .to_owned();
    let in_dialog = |method: &str, cseq: u32, branch: &str, me: &Phone| {
        format!(
            "{method} {target} SIP/2.0\r\n{}Max-Forwards: 70\r\nFrom: <sip:{user}@{sbc}>;tag=call1\r\n{to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
            me.via(branch),
            sbc = net.sbc()
        )
    };
    let ack = in_dialog("ACK", 2, "ack2", phone);
    phone.send(&ack);
    std::thread::sleep(Duration::from_millis(300));
    let bye = in_dialog("BYE", 3, "bye3", phone);
    phone.send(&bye);
    let done = phone.wait("BYE response", |m| m.contains("CSeq: 3 BYE"));
    assert_eq!(status(&done), 200, "{done}\n{}", sbc.log());
}

/// The ITSP of tls-trunk.toml: a TLS server that demands the SBC's client
/// certificate, answers INVITE and BYE with 200. Counts the calls it
/// answered and the connections that presented a certificate.
struct Itsp {
    answered: Arc<AtomicUsize>,
    verified: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Itsp {
    /// Listens on `ip`:5061; its SDP points at `ip`.
    fn start(ip: &str) -> Itsp {
        let at = format!("{ip}:5061");
        let media_ip = ip.to_owned();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(ca(), provider())
                .build()
                .unwrap();
        let config = Arc::new(
            ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain("itsp"), key("itsp"))
                .unwrap(),
        );
        let listener = TcpListener::bind(&at).unwrap();
        listener.set_nonblocking(true).unwrap();
        let answered = Arc::new(AtomicUsize::new(0));
        let verified = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, v, s) = (
            Arc::clone(&answered),
            Arc::clone(&verified),
            Arc::clone(&stop),
        );
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut conns = Vec::new();
            while !s.load(Ordering::Relaxed) && Instant::now() < deadline {
                if let Ok((tcp, _)) = listener.accept() {
                    tcp.set_nonblocking(false).unwrap();
                    tcp.set_read_timeout(Some(Duration::from_millis(20)))
                        .unwrap();
                    let conn = ServerConnection::new(Arc::clone(&config)).unwrap();
                    conns.push((rustls::StreamOwned::new(conn, tcp), Vec::new(), false));
                }
                for (stream, buf, counted) in &mut conns {
                    let Some(msg) =
                        read_message(stream, buf, Instant::now() + Duration::from_millis(20))
                    else {
                        continue;
                    };
                    if !*counted
                        && stream
                            .conn
                            .peer_certificates()
                            .is_some_and(|c| !c.is_empty())
                    {
                        *counted = true;
                        v.fetch_add(1, Ordering::Relaxed);
                    }
                    let reply = if msg.starts_with("INVITE ") {
                        a.fetch_add(1, Ordering::Relaxed);
                        respond(
                            &msg,
                            200,
                            "OK",
                            "itsp1",
                            "Contact: <sip:itsp@itsp.example;transport=tls>\r\nContent-Type: application/sdp\r\n",
                            &sdp(&media_ip, 42_000),
                        )
                    } else if msg.starts_with("BYE ") || msg.starts_with("OPTIONS ") {
                        respond(&msg, 200, "OK", "itsp1", "", "")
                    } else {
                        continue;
                    };
                    let _ = stream.write_all(reply.as_bytes());
                    let _ = stream.flush();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Itsp {
            answered,
            verified,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Itsp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn trunk_config(net: Net) -> String {
    let mut text = example("tls-trunk.toml", net);
    text.push_str("\n[shards]\ncount = 2\npin_threads = false\n");
    text
}

/// Connects to the SBC's TLS listener from `ip`, presenting `identity`;
/// sends an OPTIONS and returns the answer, or `None` when the handshake
/// (or anything after it) fails.
fn options_over_tls(net: Net, ip: &str, identity: Option<&str>) -> Option<String> {
    options_over_tls_of(net, ip, identity, rustls::DEFAULT_VERSIONS).map(|(answer, _)| answer)
}

/// [`options_over_tls`] offering only `versions`; with the version the
/// handshake settled on.
fn options_over_tls_of(
    net: Net,
    ip: &str,
    identity: Option<&str>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Option<(String, rustls::ProtocolVersion)> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(ip.parse().unwrap(), 0).into())
        .unwrap();
    let at: SocketAddr = format!("{}:5061", net.ip(1)).parse().unwrap();
    sock.connect(&at.into()).unwrap();
    let tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let local = tcp.local_addr().unwrap();
    let conn = ClientConnection::new(
        client_config_of(identity, versions),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let msg = format!(
        // Each its own transaction (branch) and Call-ID: a request that
        // repeated an earlier one's would be taken for its retransmission.
        "OPTIONS sip:{sbc} SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKopt{port}\r\nMax-Forwards: 70\r\nFrom: <sip:itsp@itsp.example>;tag=o1\r\nTo: <sip:{sbc}>\r\nCall-ID: opt-{port}-{ip}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        sbc = net.sbc(),
        port = local.port()
    );
    stream.write_all(msg.as_bytes()).ok()?;
    stream.flush().ok()?;
    let mut buf = Vec::new();
    let answer = read_message(
        &mut stream,
        &mut buf,
        Instant::now() + Duration::from_secs(10),
    )?;
    Some((answer, stream.conn.protocol_version()?))
}

#[test]
fn a_udp_pbx_calls_an_itsp_over_mutual_tls_and_the_itsp_must_present_a_certificate() {
    sipp_installed();
    let net = Net(137);
    let itsp = Itsp::start(&net.ip(20));
    let sbc = Sbc::start(net, &trunk_config(net));

    let calls = 3;
    let mut args = uac_args(
        net,
        &net.pbx(),
        "uac_basic.xml",
        "+390612345678",
        calls,
        2,
        0,
    );
    args.extend([
        "-d".into(),
        "300".into(),
        "-recv_timeout".into(),
        "20000".into(),
    ]);
    let pbx = Sipp::spawn("pbx", &args).wait(LIMIT);
    assert_eq!(
        (pbx.code, pbx.successful, pbx.failed),
        (Some(0), calls as u64, 0),
        "{}\n{}",
        pbx.output,
        sbc.log()
    );
    assert_eq!(itsp.answered.load(Ordering::Relaxed), calls);
    // Each shard opened (at most) one connection and reused it.
    let verified = itsp.verified.load(Ordering::Relaxed);
    assert!(
        (1..=2).contains(&verified),
        "{verified} connections presented the SBC's certificate"
    );
    assert!(sbc.metric_sum("sbc_connections_opened_total") <= 2.0);

    // The ITSP's own connections to the SBC: without a certificate the
    // handshake fails; with one that chains to the CA, OPTIONS is answered.
    let refused = options_over_tls(net, &net.ip(20), None);
    assert!(
        refused.is_none(),
        "answered without a client certificate: {refused:?}"
    );
    let failures = sbc.wait_metric("sbc_tls_handshake_failures_total{transport=\"tls\"}", 1.0);
    assert_eq!(failures, 1.0, "{}", sbc.log());
    let answered = options_over_tls(net, &net.ip(20), Some("itsp")).unwrap_or_default();
    assert_eq!(status(&answered), 200, "{answered}\n{}", sbc.log());
    // Both TLS 1.3 and TLS 1.2 peers are served.
    for (version, want) in [
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
    ] {
        let (answer, got) = options_over_tls_of(net, &net.ip(20), Some("itsp"), &[version])
            .unwrap_or_else(|| panic!("no answer over {want:?}\n{}", sbc.log()));
        assert_eq!(got, want);
        assert_eq!(status(&answer), 200, "{answer}");
    }
}

#[test]
fn a_reload_serves_the_new_certificate_and_keeps_established_connections() {
    let net = Net(138);
    let sbc = Sbc::start(net, &phones_config(net));
    let tls_at: SocketAddr = format!("{}:5061", net.ip(1)).parse().unwrap();
    let mut phone = Phone::tls(tls_at, &net.ip(51), "alice-desk", "Desk-9f2k-Alice");
    assert_eq!(status(&phone.register(&net.sbc())), 200, "{}", sbc.log());

    // The SBC now presents the ITSP's certificate (names itsp.example, not
    // localhost): a new client checking for localhost refuses it, the
    // phone's established connection still works.
    let file = sbc.dir.path().join("sbc.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("/localhost.crt", "/itsp.crt")
            .replace("/localhost.key", "/itsp.key"),
    )
    .unwrap();
    sbc.reload();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let sock = TcpStream::connect(tls_at).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let conn = ClientConnection::new(
            client_config(None),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut stream = rustls::StreamOwned::new(conn, sock);
        let failed = stream
            .write_all(b"\r\n\r\n")
            .and_then(|()| stream.flush())
            .is_err()
            || {
                let mut b = [0u8; 16];
                matches!(stream.read(&mut b), Err(e) if e.kind() == io::ErrorKind::InvalidData)
            };
        if failed || Instant::now() > deadline {
            break failed;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(refused, "the new certificate is not served: {}", sbc.log());
    let again = phone.register(&net.sbc());
    assert_eq!(status(&again), 200, "{again}\n{}", sbc.log());
}

/// `phone` answers the next call, waits for the ACK, and answers the BYE.
fn takes_a_call(phone: &mut Phone, media_port: u16) -> String {
    let invite = phone.answer_invite(media_port);
    phone.wait("ACK", |m| m.starts_with("ACK "));
    let bye = phone.wait("BYE", |m| m.starts_with("BYE "));
    let ok = respond(&bye, 200, "OK", "phone1", "", "");
    phone.send(&ok);
    invite
}

#[test]
fn webrtc_phones_over_wss_and_ws_register_call_each_other_and_a_udp_carrier() {
    sipp_installed();
    let net = Net(139);
    let sbc = Sbc::start(net, &phones_config(net));
    let wss_at: SocketAddr = format!("{}:8443", net.ip(1)).parse().unwrap();
    let ws_at: SocketAddr = format!("{}:8080", net.ip(1)).parse().unwrap();
    let mut alice = Phone::websocket(wss_at, true, &net.ip(51), "alice-desk", "Desk-9f2k-Alice");
    let mut bob = Phone::websocket(ws_at, false, &net.ip(61), "bob", "Bob-7x1z-Secret");
    for phone in [&mut alice, &mut bob] {
        let ok = phone.register(&net.sbc());
        assert_eq!(status(&ok), 200, "{ok}\n{}", sbc.log());
    }
    let body = registrations(net, |b| b.contains("alice-desk") && b.contains("\"bob\""));
    assert!(body.contains("transport=wss"), "{body}");

    // UDP carrier -> WSS phone, WSS phone -> UDP carrier.
    rung_by_the_carrier(net, &sbc, &mut alice, 0);
    calls_the_carrier(net, &sbc, &mut alice, 20);
    // WSS phone -> WS phone, by extension.
    std::thread::scope(|s| {
        let answering = s.spawn(|| takes_a_call(&mut bob, 41_700 + u16::from(net.0)));
        dial(net, &sbc, &mut alice, "101", "call-101@test");
        let invite = answering.join().unwrap();
        assert!(invite.contains("Via: SIP/2.0/WS "), "{invite}");
        assert!(invite.starts_with("INVITE sip:bob@bob-"), "{invite}");
    });

    let open = |t: &str| {
        sbc.metric_sum(&format!(
            "sbc_connections_open{{shard=\"0\",transport=\"{t}\"}}"
        )) + sbc.metric_sum(&format!(
            "sbc_connections_open{{shard=\"1\",transport=\"{t}\"}}"
        ))
    };
    assert_eq!((open("ws"), open("wss")), (1.0, 1.0), "{}", sbc.log());
    assert_eq!(
        sbc.metric("sbc_tls_handshakes_total{transport=\"wss\"}"),
        1.0
    );
    for t in ["ws", "wss"] {
        for way in ["received", "sent"] {
            let bytes = sbc.metric(&format!(
                "sbc_connection_bytes_{way}_total{{transport=\"{t}\"}}"
            ));
            assert!(bytes > 1000.0, "{t} {way}: {bytes}");
        }
    }
}

/// A WebSocket phone that went away cannot be rung: the SBC never opens
/// a WebSocket connection itself (RFC 7118), so the INVITE for it cannot
/// leave. The carrier's calls to its DID get 480 at once, not when the
/// phone's INVITE transaction or the no-response timer (60 s here) gives
/// up. The first finds the INVITE unsent; that also marks the binding
/// unreachable (a failed flow, RFC 5626 §4.4; it stays listed until it
/// expires), so the later ones are refused without ringing. Sixteen
/// calls, so that (with two shards) some are all but certainly routed on
/// the shard that did not hold the phone's connection: that shard, and
/// the binding's, are told too.
#[test]
fn a_websocket_phone_that_went_away_is_480_at_once() {
    sipp_installed();
    let net = Net(150);
    let config = phones_config(net) + "\n[sip.timers]\nno_response_ms = 60000\n";
    let sbc = Sbc::start(net, &config);
    let wss_at: SocketAddr = format!("{}:8443", net.ip(1)).parse().unwrap();
    let mut alice = Phone::websocket(wss_at, true, &net.ip(51), "alice-desk", "Desk-9f2k-Alice");
    let ok = alice.register(&net.sbc());
    assert_eq!(status(&ok), 200, "{ok}\n{}", sbc.log());
    let body = registrations(net, |b| b.contains("alice-desk"));
    assert!(body.contains("alice-desk"), "{body}");
    drop(alice);
    let open = || {
        sbc.metric("sbc_connections_open{shard=\"0\",transport=\"wss\"}")
            + sbc.metric("sbc_connections_open{shard=\"1\",transport=\"wss\"}")
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while open() > 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(open(), 0.0, "{}", sbc.log());

    // One call at a time, 4 a second: each is refused within moments, so
    // the calls do not overlap and each is looked for at once. Each lands
    // on a shard by a keyed hash of its Call-ID: with 16 calls, all on the
    // shard that held the connection (so that forwarding the report to
    // the other shard goes untested) has a chance of 2^-16.
    let started = Instant::now();
    let late = Sipp::spawn(
        "carrier",
        &uac_args(net, &net.ip(20), "uac_basic.xml", DID, 16, 4, 0),
    )
    .wait(LIMIT);
    all_480_at_once(&late, 16, started.elapsed(), Duration::from_secs(25), &sbc);
    // The first call found the INVITE unsent; later ones nobody reachable.
    let nobody = sbc.metric("sbc_requests_rejected_total{reason=\"not_registered\"}");
    assert!((1.0..16.0).contains(&nobody), "{nobody}\n{}", sbc.log());
    let body = registrations(net, |b| b.contains("alice-desk"));
    assert!(body.contains("\"reachable\":false"), "{body}");
}

/// A phone over TLS that stops reading while it is rung, then resets its
/// connection: what the SBC still held for it (INVITEs the kernel could
/// not take) never left, so every call ringing it, on either shard, gets
/// 480 at once rather than waiting for its INVITE's timer (32 s).
#[test]
fn a_phone_lost_with_invites_still_queued_for_it_is_480_at_once() {
    sipp_installed();
    let net = Net(153);
    let config = phones_config(net) + "\n[sip.timers]\nno_response_ms = 60000\n";
    let sbc = Sbc::start(net, &config);
    let tls_at: SocketAddr = format!("{}:5061", net.ip(1)).parse().unwrap();
    // A small receive buffer and segment size, so the SBC's send buffer
    // stays small (on loopback it would grow to megabytes) and its output
    // piles up behind them.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(2048).unwrap();
    sock.set_tcp_mss(536).unwrap();
    sock.bind(&SocketAddr::new(net.ip(52).parse().unwrap(), 0).into())
        .unwrap();
    sock.connect(&tls_at.into()).unwrap();
    let tcp: TcpStream = sock.into();
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut alice = Phone::tls_on(tcp, "alice-desk", "Desk-9f2k-Alice");
    let ok = alice.register(&net.sbc());
    assert_eq!(status(&ok), 200, "{ok}\n{}", sbc.log());

    // 150 calls in 5 s; alice reads none of their INVITEs.
    let mut args = uac_args(net, &net.ip(20), "uac_basic.xml", DID, 150, 30, 0);
    args.extend(["-l", "200", "-recv_timeout", "60000"].map(String::from));
    let carrier = Sipp::spawn("carrier", &args);
    std::thread::sleep(Duration::from_secs(7));
    let Wire::Tls(stream, _) = &alice.wire else {
        unreachable!()
    };
    // Gone without a goodbye: a reset.
    socket2::SockRef::from(&stream.sock)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    let reset = Instant::now();
    drop(alice);
    let calls = carrier.wait(LIMIT);
    all_480_at_once(&calls, 150, reset.elapsed(), Duration::from_secs(20), &sbc);
}

/// All `n` calls of `calls` failed with 480, none waited for a timer
/// (no 408), and they were over `took` after the phone went, under
/// `limit`.
fn all_480_at_once(calls: &SippResult, n: u64, took: Duration, limit: Duration, sbc: &Sbc) {
    assert_eq!(
        (calls.successful, calls.failed),
        (0, n),
        "{}\n{}",
        calls.output,
        sbc.log()
    );
    assert!(
        calls.output.contains("received 'SIP/2.0 480"),
        "{}\n{}",
        calls.output,
        sbc.log()
    );
    assert!(
        !calls.output.contains("SIP/2.0 408"),
        "a call waited for a timer: {}",
        calls.output
    );
    assert!(
        took < limit,
        "{took:?}: the 480s must not wait for a timer\n{}",
        sbc.log()
    );
}

#[test]
fn websocket_upgrades_without_sip_and_garbage_are_refused_without_disturbing_others() {
    let net = Net(140);
    let sbc = Sbc::start(net, &phones_config(net));
    let ws_at: SocketAddr = format!("{}:8080", net.ip(1)).parse().unwrap();
    let mut bob = Phone::websocket(ws_at, false, &net.ip(61), "bob", "Bob-7x1z-Secret");

    // An upgrade that does not offer `sip`: 400, and the connection ends.
    let mut plain = tcp_from(&net.ip(62), ws_at);
    plain.write_all(
        format!("GET / HTTP/1.1\r\nHost: {ws_at}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").as_bytes(),
    ).unwrap();
    let mut answer = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tmp = [0u8; 1024];
    while Instant::now() < deadline {
        match plain.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    // SIP straight onto the WebSocket port: closed as a framing error.
    let mut raw = tcp_from(&net.ip(63), ws_at);
    raw.write_all(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let closed = sbc.wait_metric("sbc_connections_closed_total{reason=\"framing\"}", 2.0);
    assert_eq!(closed, 2.0, "{}", sbc.log());

    // The phone that upgraded properly is unaffected.
    let ok = bob.register(&net.sbc());
    assert_eq!(status(&ok), 200, "{ok}\n{}", sbc.log());
}

/// A connection the SBC gives up on (here: no SIP message within the
/// first 10 s) ends with its last words: TLS close_notify (RFC 8446 §6.1),
/// and over WebSocket a close frame saying "going away" (RFC 6455
/// §7.1.2), rather than a bare TCP close.
#[test]
fn connections_the_sbc_closes_end_with_close_notify_and_a_websocket_close() {
    let net = Net(156);
    let sbc = Sbc::start(net, &phones_config(net));
    let (tls, ws) = quiet_clients(net);
    // And a client that connects to the TLS port and never says hello: a
    // handshake that never ends.
    let tls_at: SocketAddr = format!("{}:5061", net.ip(1)).parse().unwrap();
    let mut silent = tcp_from(&net.ip(74), tls_at);
    // All are closed after 10 s (swept each second).
    said_goodbye(tls, ws, Duration::from_secs(20), &sbc);
    let deadline = Instant::now() + Duration::from_secs(10);
    let silent_end = loop {
        match silent.read(&mut [0u8; 256]) {
            // Whatever the SBC says last (an alert, or nothing): then EOF.
            Ok(n) if n > 0 => continue,
            Ok(_) => break Some(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break Some(()),
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => break None,
        }
    };
    assert!(silent_end.is_some(), "the silent connection stayed open");
    let timeouts = sbc.wait_metric("sbc_connections_closed_total{reason=\"timeout\"}", 3.0);
    assert_eq!(timeouts, 3.0, "{}", sbc.log());
    assert_eq!(
        sbc.wait_metric("sbc_tls_handshake_failures_total{transport=\"tls\"}", 1.0),
        1.0,
        "{}",
        sbc.log()
    );
}

/// A TLS record or a WebSocket frame begun after a whole message and
/// never finished (rustls and tungstenite hold the part out of the SBC's
/// sight) is bounded like a SIP message in part: the connection closes,
/// with its last words, once it is 10 s overdue, not at the 900 s idle
/// timeout.
#[test]
fn a_tls_record_or_websocket_frame_cut_short_closes_its_connection() {
    let net = Net(151);
    let sbc = Sbc::start(net, &phones_config(net));
    let (mut tls, mut ws) = quiet_clients(net);
    let options = |via: &str, n: u16| {
        format!(
            "OPTIONS sip:{sbc} SIP/2.0\r\nVia: SIP/2.0/{via} 127.0.0.1:9;branch=z9hG4bKcut{n}\r\nMax-Forwards: 70\r\nFrom: <sip:cut@example.com>;tag=c{n}\r\nTo: <sip:{sbc}>\r\nCall-ID: cut-{n}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            sbc = net.ip(1)
        )
    };
    // A whole message each, answered (whatever the answer).
    let deadline = Instant::now() + Duration::from_secs(10);
    tls.write_all(options("TLS", 1).as_bytes()).unwrap();
    tls.flush().unwrap();
    let answer = read_message(&mut tls, &mut Vec::new(), deadline);
    assert!(
        answer.as_deref().is_some_and(|a| a.starts_with("SIP/2.0 ")),
        "{answer:?}"
    );
    ws.send(tungstenite::Message::text(options("WS", 2)))
        .unwrap();
    let answer = loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => break t.as_str().to_owned(),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) && Instant::now() < deadline => {}
            Err(e) => panic!("no answer over WebSocket: {e}"),
        }
    };
    assert!(answer.starts_with("SIP/2.0 "), "{answer}");
    // Then the first bytes of a record (application data, 100 bytes
    // announced, 10 sent) and of a frame (masked text, 20 announced, 5
    // sent), written beneath rustls and tungstenite.
    let started = Instant::now();
    tls.sock.write_all(&[23, 3, 3, 0, 100]).unwrap();
    tls.sock.write_all(&[0x5a; 10]).unwrap();
    ws.get_mut()
        .write_all(&[0x81, 0x80 | 20, 1, 2, 3, 4])
        .unwrap();
    ws.get_mut().write_all(b"OPTIO").unwrap();
    // Not overdue at 5 s: both still open.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        sbc.metric("sbc_connections_closed_total{reason=\"timeout\"}"),
        0.0,
        "closed before the message was overdue\n{}",
        sbc.log()
    );
    said_goodbye(tls, ws, Duration::from_secs(20), &sbc);
    assert!(started.elapsed() >= Duration::from_secs(10));
    assert_eq!(
        sbc.wait_metric("sbc_connections_closed_total{reason=\"timeout\"}", 2.0),
        2.0,
        "{}",
        sbc.log()
    );
}

/// Stopped with Ctrl-C, the SBC says goodbye on its connections before it
/// exits: TLS close_notify and a WebSocket close (1001, going away).
#[test]
fn a_stopping_sbc_ends_its_connections_with_close_notify_and_a_websocket_close() {
    let net = Net(157);
    let mut sbc = Sbc::start(net, &phones_config(net));
    let (tls, ws) = quiet_clients(net);
    // And a secure WebSocket: its close frame travels inside TLS, before
    // the close_notify.
    let wss_at: SocketAddr = format!("{}:8443", net.ip(1)).parse().unwrap();
    let mut wss = upgrade(
        &format!("wss://localhost:{}/", wss_at.port()),
        tls_to_localhost(tcp_from(&net.ip(73), wss_at)),
    );
    sbc.interrupt();
    let (tls_end, ws_end) = last_words(tls, ws, Duration::from_secs(10));
    let wss_end = close_frame(&mut wss, Duration::from_secs(10));
    let exited = sbc.exit_within(Duration::from_secs(10));
    assert!(
        exited.is_some_and(|s| s.success()),
        "{exited:?}\n{}",
        sbc.log()
    );
    assert_eq!(
        tls_end,
        Some(Ok(())),
        "TLS ended with close_notify\n{}",
        sbc.log()
    );
    for end in [ws_end, wss_end] {
        let frame = end
            .expect("the WebSocket ended")
            .expect("with a close frame");
        assert_eq!(
            frame.map(|f| f.code),
            Some(tungstenite::protocol::frame::coding::CloseCode::Away)
        );
    }
}

/// How a WebSocket ended within `limit`: its close frame, or the error.
fn close_frame<S: Read + Write>(
    ws: &mut tungstenite::WebSocket<S>,
    limit: Duration,
) -> Option<WsEnd> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(end) = close_frame_now(ws) {
            return Some(end);
        }
    }
    None
}

/// One read of a WebSocket: how it ended, or `None` when nothing came
/// within the socket's read timeout.
fn close_frame_now<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) -> Option<WsEnd> {
    match ws.read() {
        Ok(tungstenite::Message::Close(frame)) => Some(Ok(frame)),
        Ok(other) => panic!("unexpected frame: {other:?}"),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => Some(Err(e.to_string())),
    }
}

/// A TLS client that completed its handshake and a WebSocket client that
/// upgraded, both on the example listeners, saying nothing.
fn quiet_clients(net: Net) -> (TlsStream, tungstenite::WebSocket<TcpStream>) {
    let tls_at: SocketAddr = format!("{}:5061", net.ip(1)).parse().unwrap();
    let ws_at: SocketAddr = format!("{}:8080", net.ip(1)).parse().unwrap();
    let mut tls = tls_to_localhost(tcp_from(&net.ip(71), tls_at));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls.conn.is_handshaking() {
        match tls.conn.complete_io(&mut tls.sock) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("handshake: {e}"),
        }
        assert!(Instant::now() < deadline, "no TLS handshake");
    }
    let ws = upgrade(&format!("ws://{ws_at}/"), tcp_from(&net.ip(72), ws_at));
    (tls, ws)
}

type WsEnd = Result<Option<tungstenite::protocol::CloseFrame>, String>;

/// Both connections end within `limit` with their last words: TLS
/// close_notify, and a WebSocket close frame saying "going away".
fn said_goodbye(tls: TlsStream, ws: tungstenite::WebSocket<TcpStream>, limit: Duration, sbc: &Sbc) {
    let (tls_end, ws_end) = last_words(tls, ws, limit);
    assert_eq!(
        tls_end,
        Some(Ok(())),
        "TLS ended with close_notify\n{}",
        sbc.log()
    );
    let frame = ws_end
        .expect("the WebSocket ended")
        .expect("with a close frame");
    assert_eq!(
        frame.map(|f| f.code),
        Some(tungstenite::protocol::frame::coding::CloseCode::Away)
    );
}

/// How the two connections ended, within `limit`: `Ok(())` for TLS is a
/// close_notify (a bare TCP close is `UnexpectedEof`); for the WebSocket,
/// the close frame.
fn last_words(
    mut tls: TlsStream,
    mut ws: tungstenite::WebSocket<TcpStream>,
    limit: Duration,
) -> (Option<Result<(), io::ErrorKind>>, Option<WsEnd>) {
    let deadline = Instant::now() + limit;
    let (mut tls_end, mut ws_end) = (None, None);
    let mut buf = [0u8; 256];
    while (tls_end.is_none() || ws_end.is_none()) && Instant::now() < deadline {
        if tls_end.is_none() {
            match tls.read(&mut buf) {
                // rustls reads 0 only after the peer's close_notify.
                Ok(0) => tls_end = Some(Ok(())),
                Ok(n) => panic!("unexpected data: {:?}", &buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => tls_end = Some(Err(e.kind())),
            }
        }
        if ws_end.is_none() {
            ws_end = close_frame_now(&mut ws);
        }
    }
    (tls_end, ws_end)
}
