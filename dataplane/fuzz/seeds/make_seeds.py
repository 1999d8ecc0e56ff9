#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (run from anywhere):
engine_datagram gets whole call flows in its step language (see the
target's docs), sip_message the RFC 4475 torture messages, sdp a few
bodies, digest header values (RFC 7616 §3.9.1's SHA-256 challenge and
answer, RFC 2617 §3.5's MD5 challenge, a SIP REGISTER's answer without
qop). The files are committed; this script says how they were made.
Inputs named regression_* were found by the fuzzer and are kept by hand
(engine_datagram/regression_record_route_not_a_uri: a Record-Route with a
bare CR, which reached the Request-URI of the SBC's BYE)."""
import os, shutil

here = os.path.dirname(os.path.abspath(__file__))
OFFER = "v=0\r\no=- 1 1 IN IP4 10.0.0.10\r\ns=-\r\nc=IN IP4 10.0.0.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
VIDEO = OFFER + "m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n"

def invite(host, number, call_id, body=OFFER, method="INVITE"):
    ct = "Content-Type: application/sdp\r\n" if body else ""
    return (f"{method} sip:{number}@192.0.2.1:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {host};branch=z9hG4bK{call_id};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: \"Alice\" <sip:alice@{host}>;tag=caller-tag\r\n"
            f"To: <sip:{number}@192.0.2.1>\r\n"
            f"Call-ID: {call_id}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:alice@{host}>\r\n"
            f"{ct}Content-Length: {len(body)}\r\n\r\n{body}").encode()

def step(op, payload=b""):
    return bytes([op]) + payload

RTP = bytes([0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0, 0, 42]) + b"\xd5" * 160
ACK, BYE, INFO, REINVITE, UPDATE, CANCEL, OPTIONS = range(7)
T100, T180, T183, T200, T486, T503, T401, T408 = range(8)

def register(cseq, extra):
    return (f"REGISTER sip:192.0.2.1 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-r{cseq}\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:alice@192.0.2.1>;tag=r1\r\n"
            "To: <sip:alice@192.0.2.1>\r\n"
            "Call-ID: reg-1\r\n"
            f"CSeq: {cseq} REGISTER\r\n"
            f"{extra}"
            "Content-Length: 0\r\n\r\n").encode()

flows = {
    "basic_call": [step(0, invite("10.0.0.10:5060", "15551234", "c1")), step(3, bytes([T180])),
                   step(3, bytes([T200])), step(5, bytes([ACK])), step(6, bytes([0]) + RTP),
                   step(6, bytes([0x80]) + RTP), step(5, bytes([BYE])), step(7, bytes([5]))],
    "failover": [step(0, invite("10.0.0.10:5060", "15551234", "c2")), step(3, bytes([T503])),
                 step(7, bytes([50])), step(7, bytes([50]))],
    "cancel": [step(0, invite("10.0.0.10:5060", "15551234", "c3")), step(3, bytes([T180])),
               step(5, bytes([CANCEL | 8])), step(3, bytes([T200])), step(7, bytes([40]))],
    "busy": [step(0, invite("10.0.0.10:5060", "15551234", "c4")), step(3, bytes([T486])), step(5, bytes([ACK | 8]))],
    "reinvite": [step(8, invite("10.0.0.10:5060", "15551234", "c5", VIDEO)), step(3, bytes([T183])),
                 step(3, bytes([T200])), step(5, bytes([ACK])), step(5, bytes([REINVITE])),
                 step(4, bytes([T200])), step(5, bytes([UPDATE])), step(5, bytes([INFO])),
                 step(7, bytes([255])), step(7, bytes([255]))],
    "inbound_did": [step(1, invite("10.0.0.20:5060", "+3902123456", "c6")), step(4, bytes([T180])),
                    step(4, bytes([T200])), step(7, bytes([10]))],
    "stranger": [step(2, invite("203.0.113.9:5060", "15551234", "c7")), step(2, b"OPTIONS sip:x SIP/2.0\r\n\r\n"),
                 step(0, b"\r\n\r\n")],
    "late_offer": [step(0, invite("10.0.0.10:5060", "15551234", "c8", body="")), step(3, bytes([T200])),
                   step(5, bytes([ACK]))],
    "timeout": [step(0, invite("10.0.0.10:5060", "15551234", "c9")), step(7, bytes([255])), step(7, bytes([255]))],
    # Hostile and edge cases (issue 12): an ACK with no To tag after the
    # answer, a 200 forged by a stranger, session timers (a 422, then a
    # call whose refreshes stop), an INFO flood in one dialog.
    "blind_ack": [step(0, invite("10.0.0.10:5060", "15551234", "c10")), step(3, bytes([T200])),
                  step(0, invite("10.0.0.10:5060", "15551234", "c10", body="", method="ACK")),
                  step(7, bytes([255]))],
    "forged_response": [step(0, invite("10.0.0.10:5060", "15551234", "c11")),
                        step(2, b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-forged\r\n"
                                b"From: <sip:a@192.0.2.1>;tag=x\r\nTo: <sip:b@10.0.0.20>;tag=y\r\n"
                                b"Call-ID: forged\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"),
                        step(7, bytes([50]))],
    "session_timer": [step(0, invite("10.0.0.10:5060", "15551234", "c12").replace(
                          b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nSupported: timer\r\nSession-Expires: 60\r\n")),
                      step(0, invite("10.0.0.10:5060", "15551234", "c13").replace(
                          b"Max-Forwards: 70\r\n", b"Max-Forwards: 70\r\nSupported: timer\r\nSession-Expires: 90\r\n")),
                      step(3, bytes([T200])), step(5, bytes([ACK])), step(5, bytes([REINVITE])),
                      step(4, bytes([T200])), step(7, bytes([255])), step(7, bytes([255])),
                      step(7, bytes([255])), step(7, bytes([255]))],
    "info_flood": [step(0, invite("10.0.0.10:5060", "15551234", "c14")), step(3, bytes([T200])),
                   step(5, bytes([ACK]))] + [step(5, bytes([INFO]))] * 40 + [step(7, bytes([100]))],
    "register": [step(2, register(1, "Contact: <sip:alice@203.0.113.9:5060>;expires=120\r\n")),
                 step(2, register(2, "Contact: <sip:alice@203.0.113.9:5060>\r\nExpires: 0\r\n"
                          'Authorization: Digest username="alice", realm="sbc", '
                          'nonce="000000000000000000000000ef304fb8e9b535ba", uri="sip:192.0.2.1", '
                          'response="0123456789abcdef0123456789abcdef", qop=auth, nc=00000001, cnonce="x", '
                          'algorithm=MD5\r\n'))],
}
d = os.path.join(here, "engine_datagram")
for name, steps in flows.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(b"\xff".join(steps))

src = os.path.join(here, "../../core/tests/data/rfc4475")
for name in sorted(os.listdir(src)):
    if name.endswith(".sip"):
        shutil.copy(os.path.join(src, name), os.path.join(here, "sip_message", name))

sdps = {"offer": OFFER, "video": VIDEO,
        "ipv6": OFFER.replace("IN IP4 10.0.0.10", "IN IP6 2001:db8::10"),
        "ice": OFFER + "a=ice-ufrag:abcd\r\na=candidate:1 1 UDP 2130706431 10.0.0.10 4000 typ host\r\na=rtcp:4001\r\n",
        "held": OFFER.replace("a=sendrecv", "a=inactive").replace("c=IN IP4 10.0.0.10", "c=IN IP4 0.0.0.0"),
        "rejected": OFFER + "m=video 0 RTP/AVP 96\r\n"}
for name, body in sdps.items():
    with open(os.path.join(here, "sdp", name), "wb") as f:
        f.write(body.encode())

# Header values only (no header name), one per file.
digests = {
    "rfc7616_www_authenticate": 'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
                                'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
                                'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"',
    "rfc7616_authorization": 'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
                             'algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
                             'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
                             'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
                             'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS", userhash=false',
    "rfc2617_www_authenticate": 'Digest realm="testrealm@host.com", qop="auth,auth-int", '
                                'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"',
    "sip_register_authorization": 'Digest username="alice", realm="sbc", nonce="abc", uri="sip:127.0.0.1", '
                                  'response="%s", algorithm=MD5',
}
import hashlib
def md5(s):
    return hashlib.md5(s.encode()).hexdigest()
digests["sip_register_authorization"] %= md5(md5("alice:sbc:secret") + ":abc:" + md5("REGISTER:sip:127.0.0.1"))
os.makedirs(os.path.join(here, "digest"), exist_ok=True)
for name, value in digests.items():
    with open(os.path.join(here, "digest", name), "wb") as f:
        f.write(value.encode())
