//! Header names: canonical kinds for the headers the SBC reasons about,
//! recognised case-insensitively and in their compact forms (RFC 3261 §7.3.3,
//! §20; RFC 3515, RFC 3892, RFC 4028, RFC 6665).

/// A header the SBC knows by name. Everything else is [`HeaderName::Other`]
/// and keeps its original spelling in [`super::Header::raw_name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HeaderName {
    Accept,
    Allow,
    AllowEvents,
    Authorization,
    CallId,
    Contact,
    ContentDisposition,
    ContentEncoding,
    ContentLength,
    ContentType,
    CSeq,
    Date,
    Event,
    Expires,
    From,
    MaxForwards,
    MinExpires,
    MinSe,
    Path,
    PAssertedIdentity,
    PPreferredIdentity,
    ProxyAuthenticate,
    ProxyAuthorization,
    ProxyRequire,
    RAck,
    Reason,
    RecordRoute,
    ReferTo,
    ReferredBy,
    Replaces,
    Require,
    RetryAfter,
    Route,
    RSeq,
    Server,
    SessionExpires,
    Subject,
    Supported,
    To,
    Unsupported,
    UserAgent,
    Via,
    Warning,
    WwwAuthenticate,
    Other,
}

impl HeaderName {
    /// Recognises a header name (full or compact form), ignoring case.
    pub fn parse(name: &[u8]) -> Self {
        if name.len() == 1 {
            return Self::compact(name[0].to_ascii_lowercase());
        }
        // The spellings of RFC 3261 and of almost every stack: matched as
        // written, without lowercasing first.
        match name {
            b"Via" => return Self::Via,
            b"From" => return Self::From,
            b"To" => return Self::To,
            b"Call-ID" => return Self::CallId,
            b"CSeq" => return Self::CSeq,
            b"Contact" => return Self::Contact,
            b"Max-Forwards" => return Self::MaxForwards,
            b"Content-Type" => return Self::ContentType,
            b"Content-Length" => return Self::ContentLength,
            b"Record-Route" => return Self::RecordRoute,
            b"Route" => return Self::Route,
            b"User-Agent" => return Self::UserAgent,
            b"Allow" => return Self::Allow,
            b"Supported" => return Self::Supported,
            _ => {}
        }
        let mut lower = [0u8; 24];
        if name.len() > lower.len() {
            return Self::Other;
        }
        for (dst, src) in lower.iter_mut().zip(name) {
            *dst = src.to_ascii_lowercase();
        }
        match &lower[..name.len()] {
            b"accept" => Self::Accept,
            b"allow" => Self::Allow,
            b"allow-events" => Self::AllowEvents,
            b"authorization" => Self::Authorization,
            b"call-id" => Self::CallId,
            b"contact" => Self::Contact,
            b"content-disposition" => Self::ContentDisposition,
            b"content-encoding" => Self::ContentEncoding,
            b"content-length" => Self::ContentLength,
            b"content-type" => Self::ContentType,
            b"cseq" => Self::CSeq,
            b"date" => Self::Date,
            b"event" => Self::Event,
            b"expires" => Self::Expires,
            b"from" => Self::From,
            b"max-forwards" => Self::MaxForwards,
            b"min-expires" => Self::MinExpires,
            b"min-se" => Self::MinSe,
            b"path" => Self::Path,
            b"p-asserted-identity" => Self::PAssertedIdentity,
            b"p-preferred-identity" => Self::PPreferredIdentity,
            b"proxy-authenticate" => Self::ProxyAuthenticate,
            b"proxy-authorization" => Self::ProxyAuthorization,
            b"proxy-require" => Self::ProxyRequire,
            b"rack" => Self::RAck,
            b"reason" => Self::Reason,
            b"record-route" => Self::RecordRoute,
            b"refer-to" => Self::ReferTo,
            b"referred-by" => Self::ReferredBy,
            b"replaces" => Self::Replaces,
            b"require" => Self::Require,
            b"retry-after" => Self::RetryAfter,
            b"route" => Self::Route,
            b"rseq" => Self::RSeq,
            b"server" => Self::Server,
            b"session-expires" => Self::SessionExpires,
            b"subject" => Self::Subject,
            b"supported" => Self::Supported,
            b"to" => Self::To,
            b"unsupported" => Self::Unsupported,
            b"user-agent" => Self::UserAgent,
            b"via" => Self::Via,
            b"warning" => Self::Warning,
            b"www-authenticate" => Self::WwwAuthenticate,
            _ => Self::Other,
        }
    }

    /// Compact forms (RFC 3261 §7.3.3 and the extensions that define them).
    fn compact(c: u8) -> Self {
        match c {
            b'b' => Self::ReferredBy,
            b'c' => Self::ContentType,
            b'e' => Self::ContentEncoding,
            b'f' => Self::From,
            b'i' => Self::CallId,
            b'k' => Self::Supported,
            b'l' => Self::ContentLength,
            b'm' => Self::Contact,
            b'o' => Self::Event,
            b'r' => Self::ReferTo,
            b's' => Self::Subject,
            b't' => Self::To,
            b'u' => Self::AllowEvents,
            b'v' => Self::Via,
            b'x' => Self::SessionExpires,
            _ => Self::Other,
        }
    }

    /// The canonical (long) spelling used when the SBC writes the header.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accept => "Accept",
            Self::Allow => "Allow",
            Self::AllowEvents => "Allow-Events",
            Self::Authorization => "Authorization",
            Self::CallId => "Call-ID",
            Self::Contact => "Contact",
            Self::ContentDisposition => "Content-Disposition",
            Self::ContentEncoding => "Content-Encoding",
            Self::ContentLength => "Content-Length",
            Self::ContentType => "Content-Type",
            Self::CSeq => "CSeq",
            Self::Date => "Date",
            Self::Event => "Event",
            Self::Expires => "Expires",
            Self::From => "From",
            Self::MaxForwards => "Max-Forwards",
            Self::MinExpires => "Min-Expires",
            Self::MinSe => "Min-SE",
            Self::Path => "Path",
            Self::PAssertedIdentity => "P-Asserted-Identity",
            Self::PPreferredIdentity => "P-Preferred-Identity",
            Self::ProxyAuthenticate => "Proxy-Authenticate",
            Self::ProxyAuthorization => "Proxy-Authorization",
            Self::ProxyRequire => "Proxy-Require",
            Self::RAck => "RAck",
            Self::Reason => "Reason",
            Self::RecordRoute => "Record-Route",
            Self::ReferTo => "Refer-To",
            Self::ReferredBy => "Referred-By",
            Self::Replaces => "Replaces",
            Self::Require => "Require",
            Self::RetryAfter => "Retry-After",
            Self::Route => "Route",
            Self::RSeq => "RSeq",
            Self::Server => "Server",
            Self::SessionExpires => "Session-Expires",
            Self::Subject => "Subject",
            Self::Supported => "Supported",
            Self::To => "To",
            Self::Unsupported => "Unsupported",
            Self::UserAgent => "User-Agent",
            Self::Via => "Via",
            Self::Warning => "Warning",
            Self::WwwAuthenticate => "WWW-Authenticate",
            Self::Other => "",
        }
    }

    /// Headers that may appear only once in a message (RFC 3261 §7.3.1:
    /// only list-valued headers may repeat).
    pub(crate) fn is_single(self) -> bool {
        matches!(
            self,
            Self::CallId
                | Self::ContentLength
                | Self::ContentType
                | Self::CSeq
                | Self::From
                | Self::MaxForwards
                | Self::To
        )
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderName;

    #[test]
    fn every_known_name_is_found_in_any_case_and_no_other() {
        let known = [
            (&b"accept"[..], HeaderName::Accept),
            (&b"allow"[..], HeaderName::Allow),
            (&b"allow-events"[..], HeaderName::AllowEvents),
            (&b"authorization"[..], HeaderName::Authorization),
            (&b"call-id"[..], HeaderName::CallId),
            (&b"contact"[..], HeaderName::Contact),
            (&b"content-disposition"[..], HeaderName::ContentDisposition),
            (&b"content-encoding"[..], HeaderName::ContentEncoding),
            (&b"content-length"[..], HeaderName::ContentLength),
            (&b"content-type"[..], HeaderName::ContentType),
            (&b"cseq"[..], HeaderName::CSeq),
            (&b"date"[..], HeaderName::Date),
            (&b"event"[..], HeaderName::Event),
            (&b"expires"[..], HeaderName::Expires),
            (&b"from"[..], HeaderName::From),
            (&b"max-forwards"[..], HeaderName::MaxForwards),
            (&b"min-expires"[..], HeaderName::MinExpires),
            (&b"min-se"[..], HeaderName::MinSe),
            (&b"path"[..], HeaderName::Path),
            (&b"p-asserted-identity"[..], HeaderName::PAssertedIdentity),
            (&b"p-preferred-identity"[..], HeaderName::PPreferredIdentity),
            (&b"proxy-authenticate"[..], HeaderName::ProxyAuthenticate),
            (&b"proxy-authorization"[..], HeaderName::ProxyAuthorization),
            (&b"proxy-require"[..], HeaderName::ProxyRequire),
            (&b"rack"[..], HeaderName::RAck),
            (&b"reason"[..], HeaderName::Reason),
            (&b"record-route"[..], HeaderName::RecordRoute),
            (&b"refer-to"[..], HeaderName::ReferTo),
            (&b"referred-by"[..], HeaderName::ReferredBy),
            (&b"replaces"[..], HeaderName::Replaces),
            (&b"require"[..], HeaderName::Require),
            (&b"retry-after"[..], HeaderName::RetryAfter),
            (&b"route"[..], HeaderName::Route),
            (&b"rseq"[..], HeaderName::RSeq),
            (&b"server"[..], HeaderName::Server),
            (&b"session-expires"[..], HeaderName::SessionExpires),
            (&b"subject"[..], HeaderName::Subject),
            (&b"supported"[..], HeaderName::Supported),
            (&b"to"[..], HeaderName::To),
            (&b"unsupported"[..], HeaderName::Unsupported),
            (&b"user-agent"[..], HeaderName::UserAgent),
            (&b"via"[..], HeaderName::Via),
            (&b"warning"[..], HeaderName::Warning),
            (&b"www-authenticate"[..], HeaderName::WwwAuthenticate),
        ];
        for (name, header) in known {
            assert_eq!(HeaderName::parse(name), header);
            assert_eq!(HeaderName::parse(&name.to_ascii_uppercase()), header);
            assert_eq!(header.as_str().as_bytes().to_ascii_lowercase(), name);
            // Same length, first and last letter, another name.
            let mut other = name.to_vec();
            other[name.len() / 2] ^= 0x01;
            assert_eq!(HeaderName::parse(&other), HeaderName::Other, "{other:?}");
        }
        assert_eq!(HeaderName::parse(b"X-Custom"), HeaderName::Other);
    }

    #[test]
    fn names_are_case_insensitive_and_compact() {
        // RFC 3261 §7.3.1: field names are case-insensitive; §7.3.3 compact forms.
        assert_eq!(HeaderName::parse(b"MaX-fOrWaRdS"), HeaderName::MaxForwards);
        assert_eq!(HeaderName::parse(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::parse(b"V"), HeaderName::Via);
        assert_eq!(HeaderName::parse(b"i"), HeaderName::CallId);
        assert_eq!(HeaderName::parse(b"l"), HeaderName::ContentLength);
        assert_eq!(HeaderName::parse(b"m"), HeaderName::Contact);
        assert_eq!(HeaderName::parse(b"NewFangledHeader"), HeaderName::Other);
        assert_eq!(
            HeaderName::parse(b"a-header-name-longer-than-the-buffer"),
            HeaderName::Other
        );
    }
}
