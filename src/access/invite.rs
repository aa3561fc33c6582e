//! Invitation links (access-v1, "Keys"): `<page URL>#v=1&broker=…&prefix=…&camera=…&
//! name=…&exp=…&key=…`, everything after `#` so no server ever receives it. Pure.

use super::keys::ViewerKey;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use std::time::Duration;

/// Why a `--ttl` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ttl must be a positive number with a unit s, m, h or d (e.g. 30d), at most 3650d")]
pub struct BadTtl;

/// Parses a lifetime such as `90s`, `15m`, `12h` or `30d`.
///
/// # Errors
/// [`BadTtl`] for anything else, zero, or more than ten years.
pub fn parse_ttl(text: &str) -> Result<Duration, BadTtl> {
    let text = text.trim();
    let split = text.len().checked_sub(1).ok_or(BadTtl)?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| BadTtl)?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or(BadTtl)?,
        "h" => n.checked_mul(3600).ok_or(BadTtl)?,
        "d" => n.checked_mul(86_400).ok_or(BadTtl)?,
        _ => return Err(BadTtl),
    };
    if secs == 0 || secs > 3650 * 86_400 {
        return Err(BadTtl);
    }
    Ok(Duration::from_secs(secs))
}

/// What an invitation link carries besides the page URL.
#[derive(Debug, Clone)]
pub struct Invitation<'a> {
    /// The broker's WebSocket URL for the page; `None` lets the page use its default
    /// (the embedded broker on the page's own host).
    pub broker_ws: Option<&'a str>,
    /// Topic prefix.
    pub prefix: &'a str,
    /// Camera id.
    pub camera: &'a str,
    /// Viewer name.
    pub name: &'a str,
    /// Expiry, unix seconds.
    pub exp: u64,
    /// The viewer key.
    pub key: &'a ViewerKey,
}

/// The invitation link for `page_url` (any existing fragment is replaced).
pub fn link(page_url: &str, inv: &Invitation<'_>) -> String {
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let base = page_url.split('#').next().unwrap_or(page_url);
    let mut fragment = String::from("v=1");
    if let Some(b) = inv.broker_ws {
        fragment.push_str(&format!("&broker={}", enc(b)));
    }
    fragment.push_str(&format!(
        "&prefix={}&camera={}&name={}&exp={}&key={}",
        enc(inv.prefix),
        enc(inv.camera),
        enc(inv.name),
        inv.exp,
        inv.key.to_base64url()
    ));
    format!("{base}#{fragment}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::keys::Secret;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_ttl("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        for bad in ["", "d", "0d", "30", "30w", "-1d", "99999d", "1.5h"] {
            assert_eq!(parse_ttl(bad), Err(BadTtl), "{bad}");
        }
    }

    #[test]
    fn the_link_carries_everything_in_the_fragment() {
        let mut s = [0u8; 32];
        for (i, b) in s.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap();
        }
        let key = ViewerKey::derive(&Secret::from_bytes(s), "porch", "alice", 1_798_675_200);
        let inv = Invitation {
            broker_ws: Some("wss://broker.example:8884/mqtt"),
            prefix: "edgecam",
            camera: "porch",
            name: "alice",
            exp: 1_798_675_200,
            key: &key,
        };
        assert_eq!(
            link("https://cam.example/#old", &inv),
            "https://cam.example/#v=1&broker=wss%3A%2F%2Fbroker%2Eexample%3A8884%2Fmqtt\
             &prefix=edgecam&camera=porch&name=alice&exp=1798675200\
             &key=kArD0VbYcjGuNOKIEEiu53VaI7TxOeLVwRtkePrCjuo"
        );
        let no_broker = Invitation {
            broker_ws: None,
            ..inv
        };
        assert!(
            link("http://pi.local:8080/", &no_broker)
                .starts_with("http://pi.local:8080/#v=1&prefix=")
        );
    }
}
