//! The Digest challenge and credentials parsers (`sip::digest`) on
//! arbitrary header values: never a panic; what parses writes and parses
//! back the same; the answer to a parsed challenge verifies against it (and
//! fails with another password); parsed credentials are checked against
//! the challenge they claim to answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sbc_core::sip::digest::{self, Authorization, Challenge, Credentials, DigestError, Secret};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = Challenge::parse(data) {
        let mut out = Vec::new();
        c.write(&mut out).expect("a parsed challenge writes");
        assert_eq!(
            Challenge::parse(&out).as_ref(),
            Ok(&c),
            "challenge round trip: {:?}",
            String::from_utf8_lossy(&out)
        );
        let me = Credentials {
            username: b"alice",
            password: b"secret",
        };
        if let Ok(a) = digest::answer(&c, &me, b"REGISTER", b"sip:example.com", b"0a4f113b", 1) {
            let mut out = Vec::new();
            a.write(&mut out).expect("an answer writes");
            let back = Authorization::parse(&out).expect("an answer parses");
            assert_eq!(
                back,
                a,
                "answer round trip: {:?}",
                String::from_utf8_lossy(&out)
            );
            assert_eq!(
                digest::verify(&c, &back, b"REGISTER", Secret::Password(b"secret")),
                Ok(())
            );
            assert_eq!(
                digest::verify(&c, &back, b"REGISTER", Secret::Password(b"wrong")),
                Err(DigestError::WrongResponse)
            );
        }
    }
    if let Ok(a) = Authorization::parse(data) {
        let mut out = Vec::new();
        a.write(&mut out).expect("parsed credentials write");
        assert_eq!(
            Authorization::parse(&out).as_ref(),
            Ok(&a),
            "credentials round trip: {:?}",
            String::from_utf8_lossy(&out)
        );
        // The challenge these credentials answer, so that verification
        // gets as far as the response.
        let c = Challenge {
            realm: a.realm.to_vec(),
            nonce: a.nonce.to_vec(),
            opaque: a.opaque.as_deref().map(<[u8]>::to_vec),
            algorithm: a.algorithm,
            qop: a.qop.into_iter().collect(),
            stale: false,
        };
        let by_challenge = digest::verify(&c, &a, b"INVITE", Secret::Password(b"secret"));
        let _ = digest::verify(&c, &a, b"INVITE", Secret::Ha1(&a.response));
        // The same check against the challenge's parts, as the registrar
        // makes it.
        assert_eq!(
            digest::verify_expected(c.expected(), &a, b"INVITE", Secret::Password(b"secret")),
            by_challenge
        );
    }
});
