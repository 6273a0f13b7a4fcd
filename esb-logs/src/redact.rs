//! URLs with their credentials hidden, for messages, errors and `Debug`.

use std::borrow::Cow;

/// `url` with its user information (`user:password@`) replaced by `***@`; anything else is
/// kept. Works on text that does not parse as a URL too, so an error about a bad URL never
/// shows the password in it.
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else {
        return redact_authority(url, 0);
    };
    redact_authority(url, scheme_end + 3)
}

/// Hides what comes before the last `@` of the authority that starts at `start`.
fn redact_authority(url: &str, start: usize) -> Cow<'_, str> {
    let rest = &url[start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => Cow::Owned(format!("{}***{}", &url[..start], &rest[at..])),
        None => Cow::Borrowed(url),
    }
}

/// A URL's user name and password, percent-decoded, and the URL without them.
pub(crate) fn split_userinfo(mut url: url::Url) -> (url::Url, Option<(String, String)>) {
    let username = decode(url.username());
    let password = url.password().map(decode);
    if username.is_empty() && password.is_none() {
        return (url, None);
    }
    // Cannot fail for the http(s) URLs this is called with.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    (url, Some((username, password.unwrap_or_default())))
}

fn decode(text: &str) -> String {
    percent_decode(text)
}

/// Percent-decoding of user information (`%40` -> `@`), lossy on invalid UTF-8.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi * 16 + lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn user_information_is_hidden() {
        assert_eq!(
            redact_url("https://esb:hunter2@logs:9428/vl?x=a@b"),
            "https://***@logs:9428/vl?x=a@b"
        );
        assert_eq!(redact_url("http://u:p@ss@h"), "http://***@h");
        assert_eq!(redact_url("http://logs:9428"), "http://logs:9428");
        assert_eq!(redact_url("u:secret@logs:9428"), "***@logs:9428");
        assert_eq!(redact_url("http://logs/a@b"), "http://logs/a@b");
    }

    #[test]
    fn user_information_is_split_off_and_decoded() {
        let url = url::Url::parse("http://esb:p%40ss%3Aw@logs:9428/x").unwrap();
        let (url, creds) = split_userinfo(url);
        assert_eq!(url.as_str(), "http://logs:9428/x");
        assert_eq!(creds, Some(("esb".into(), "p@ss:w".into())));
        let (url, creds) = split_userinfo(url::Url::parse("http://logs").unwrap());
        assert_eq!((url.as_str(), creds), ("http://logs/", None));
    }
}
