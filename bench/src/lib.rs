//! Shared pieces of the benchmarks: the sample messages, and the relays
//! and stream set-up of the media benchmark.

pub mod harness;
pub mod procstat;
pub mod relay;

/// A typical INVITE from a PBX: 12 headers and an SDP offer.
pub const INVITE: &str = "INVITE sip:+390612345678@192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:+15551230000@10.0.0.10>;tag=1928301774\r\n\
To: <sip:+390612345678@192.0.2.1>\r\n\
Call-ID: a84b4c76e66710@pbx.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:+15551230000@10.0.0.10:5060>\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO\r\n\
Supported: timer, replaces\r\n\
User-Agent: PBX/1.0\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 142\r\n\
\r\n\
v=0\r\n\
o=- 20518 0 IN IP4 10.0.0.10\r\n\
s=-\r\n\
c=IN IP4 10.0.0.10\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n";

/// A 200 OK answering it, with Record-Route and SDP.
pub const OK_200: &str = "SIP/2.0 200 OK\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK4083ba49a7190b93;rport=5060\r\n\
Record-Route: <sip:edge1.carrier.example;lr>\r\n\
From: \"Alice\" <sip:+15551230000@192.0.2.1:5060>;tag=43b29a36f176f586\r\n\
To: <sip:+390612345678@10.0.0.20:5060>;tag=8321234356\r\n\
Call-ID: 0000000000008398c73541628a8d4d03\r\n\
CSeq: 1 INVITE\r\n\
Contact: <sip:callee@10.0.0.20:5060>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 120\r\n\
\r\n\
v=0\r\n\
o=- 2 2 IN IP4 10.0.0.20\r\n\
s=-\r\n\
c=IN IP4 10.0.0.20\r\n\
t=0 0\r\n\
m=audio 5000 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n";

/// An in-dialog BYE.
pub const BYE: &str = "BYE sip:192.0.2.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.10:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
From: \"Alice\" <sip:+15551230000@10.0.0.10>;tag=1928301774\r\n\
To: <sip:+390612345678@192.0.2.1>;tag=2b484142c0343ff2\r\n\
Call-ID: a84b4c76e66710@pbx.example.com\r\n\
CSeq: 314160 BYE\r\n\
Content-Length: 0\r\n\
\r\n";

/// The three, with names, for loops over the set.
pub const MESSAGES: [(&str, &str); 3] = [("invite", INVITE), ("200_ok", OK_200), ("bye", BYE)];
