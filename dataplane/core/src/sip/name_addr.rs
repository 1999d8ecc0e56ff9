//! name-addr / addr-spec values: From, To, Contact, Route, Record-Route
//! (RFC 3261 §20.10, §20.20, §20.39, §25.1).

use super::scan::{Params, is_lws, is_token, quoted_string_end, trim, trim_start};
use super::uri::{Uri, UriError};

#[derive(Debug, Clone, Copy)]
pub struct NameAddr<'a> {
    /// Display name as written (quoted strings keep their quotes).
    pub display: Option<&'a [u8]>,
    pub uri: &'a [u8],
    /// Header parameters, starting at the first `;` (or empty).
    pub params: &'a [u8],
    /// The `tag` parameter's value, found once when parsed (dialog
    /// matching asks for it several times per message).
    tag: Option<&'a [u8]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameAddrError {
    #[error("unterminated quoted string")]
    Quote,
    #[error("display name is not a token list")]
    DisplayName,
    #[error("missing '>'")]
    Angle,
    #[error("invalid URI: {0}")]
    Uri(#[from] UriError),
    #[error("unexpected text after the URI")]
    Trailing,
}

impl<'a> NameAddr<'a> {
    /// Parses the value and checks its URI.
    pub fn parse(value: &'a [u8]) -> Result<Self, NameAddrError> {
        let parsed = Self::parse_structure(value)?;
        if parsed.uri != b"*" {
            Uri::parse(parsed.uri)?;
        }
        Ok(parsed)
    }

    /// Parses display name, URI boundaries and parameters without checking
    /// the URI itself: for the From and To of responses, of which only the
    /// tags are ever used (a B2BUA writes its own on the other leg).
    pub fn parse_structure(value: &'a [u8]) -> Result<Self, NameAddrError> {
        let s = trim(value);
        let (display, rest) = if s.first() == Some(&b'"') {
            let end = quoted_string_end(s).ok_or(NameAddrError::Quote)?;
            let rest = trim_start(&s[end..]);
            if rest.first() != Some(&b'<') {
                return Err(NameAddrError::Angle);
            }
            (Some(&s[..end]), rest)
        } else if let Some(lt) = super::scan::find_byte(b'<', s) {
            // Unquoted display name: *(token LWS); RFC 4475 §3.1.2.15 wants
            // anything else rejected.
            let display = trim(&s[..lt]);
            if !display.iter().all(|b| is_token(*b) || is_lws(*b)) {
                return Err(NameAddrError::DisplayName);
            }
            let display = (!display.is_empty()).then_some(display);
            (display, &s[lt..])
        } else {
            // addr-spec: parameters after the URI belong to the header.
            let end = s
                .iter()
                .position(|b| *b == b';' || is_lws(*b))
                .unwrap_or(s.len());
            let uri = &s[..end];
            let params = trim_start(&s[end..]);
            if !params.is_empty() && params[0] != b';' {
                return Err(NameAddrError::Trailing);
            }
            return Ok(NameAddr {
                display: None,
                uri,
                params,
                tag: tag_of(params),
            });
        };
        // rest starts with '<'
        let gt = super::scan::find_byte(b'>', rest).ok_or(NameAddrError::Angle)?;
        let uri = &rest[1..gt];
        if uri == b"*" {
            // Only an addr-spec may be "*" (a Contact of REGISTER).
            return Err(NameAddrError::Uri(UriError::NoScheme));
        }
        let params = trim_start(&rest[gt + 1..]);
        if !params.is_empty() && params[0] != b';' {
            return Err(NameAddrError::Trailing);
        }
        Ok(NameAddr {
            display,
            uri,
            params,
            tag: tag_of(params),
        })
    }

    pub fn param(&self, name: &[u8]) -> Option<Option<&'a [u8]>> {
        Params::new(self.params).get(name)
    }

    pub fn tag(&self) -> Option<&'a [u8]> {
        self.tag
    }

    /// The URI, parsed (it was validated by [`NameAddr::parse`]).
    pub fn parsed_uri(&self) -> Result<Uri<'a>, UriError> {
        Uri::parse(self.uri)
    }
}

/// The value of the first `tag` parameter in `params`.
fn tag_of(params: &[u8]) -> Option<&[u8]> {
    // The spelling of nearly every stack first: `;tag=` leading, lower
    // case, no white space, an unquoted value ending the list or followed
    // by `;`. Anything else takes the general scan, which reads it the same.
    if let Some(v) = params.strip_prefix(b";tag=")
        && v.first().is_some_and(|b| *b != b'"')
    {
        let end = v
            .iter()
            .position(|b| *b == b';' || is_lws(*b))
            .unwrap_or(v.len());
        if end > 0 && v.get(end).is_none_or(|b| *b == b';') {
            return Some(&v[..end]);
        }
    }
    Params::new(params).get(b"tag").flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The `;tag=` shortcut reads what the general parameter scan does.
        #[test]
        fn tag_shortcut_agrees_with_the_parameter_scan(
            params in "(;tag=|;TAG=|;tag =|;x=1)?[a-z0-9\"; =\t]{0,12}",
        ) {
            let general = Params::new(params.as_bytes()).get(b"tag").flatten();
            prop_assert_eq!(tag_of(params.as_bytes()), general);
        }
    }

    #[test]
    fn quoted_display_name_with_escapes() {
        let n = NameAddr::parse(
            b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        )
        .unwrap();
        assert_eq!(n.display, Some(&b"\"J Rosenberg \\\\\\\"\""[..]));
        assert_eq!(n.uri, b"sip:jdrosen@example.com");
        assert_eq!(n.tag(), Some(&b"98asjd8"[..]));
    }

    #[test]
    fn addr_spec_params_belong_to_header() {
        let n =
            NameAddr::parse(b"sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(n.uri, b"sip:vivekg@chair-dnrc.example.com");
        assert_eq!(n.tag(), Some(&b"1918181833n"[..]));
    }

    #[test]
    fn no_space_before_angle() {
        // RFC 4475 §3.1.1.6
        let n = NameAddr::parse(b"caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display, Some(&b"caller"[..]));
        assert_eq!(n.tag(), Some(&b"323"[..]));
    }

    #[test]
    fn rejects_broken_values() {
        assert_eq!(
            NameAddr::parse(b"\"Mr. J. User <sip:j.user@example.com>").unwrap_err(),
            NameAddrError::Quote
        );
        assert_eq!(
            NameAddr::parse(b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43").unwrap_err(),
            NameAddrError::DisplayName
        );
        assert!(NameAddr::parse(b"<sip:a@b").is_err());
        assert!(NameAddr::parse(b"<sip:a @b>").is_err());
    }
}
