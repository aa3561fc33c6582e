//! `signaling.broker`: an MQTT broker URL, parsed with the `url` crate (WHATWG URL
//! rules: IPv6 in brackets, percent-encoded userinfo).

use serde::Deserialize;

/// A parsed `signaling.broker` URL: `scheme://[user[:password]@]host[:port][/path]`.
///
/// Credentials in the URL are kept apart from it: [`BrokerUrl::url`] and this type's
/// `Debug` never show them, so the URL can be logged and put in the status.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct BrokerUrl {
    /// Transport.
    pub scheme: BrokerScheme,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (defaults: 1883, 8883, 80, 443).
    pub port: u16,
    /// The URL without credentials (WebSocket transports connect to it as written).
    pub url: String,
    /// `(username, password)` from the URL's userinfo, percent-decoded.
    pub userinfo: Option<(String, String)>,
}

impl std::fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerUrl")
            .field("url", &self.url)
            .field("userinfo", &self.userinfo.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Transport of a broker URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerScheme {
    /// MQTT over TCP (`mqtt://`, `tcp://`).
    Mqtt,
    /// MQTT over TLS (`mqtts://`, `ssl://`).
    Mqtts,
    /// MQTT over WebSocket (`ws://`).
    Ws,
    /// MQTT over secure WebSocket (`wss://`).
    Wss,
}

impl TryFrom<String> for BrokerUrl {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s).map_err(|e| format!("signaling.broker: {e}"))
    }
}

impl BrokerUrl {
    /// Parses `scheme://[user[:password]@]host[:port][/path]`.
    ///
    /// # Errors
    /// A description of what is wrong (never quoting the credentials).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut url =
            url::Url::parse(text).map_err(|e| format!("expected scheme://host[:port] ({e})"))?;
        let (scheme, default_port) = match url.scheme() {
            "mqtt" | "tcp" => (BrokerScheme::Mqtt, 1883),
            "mqtts" | "ssl" => (BrokerScheme::Mqtts, 8883),
            "ws" => (BrokerScheme::Ws, 80),
            "wss" => (BrokerScheme::Wss, 443),
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(h) => h.to_string(),
            None => return Err("missing host".into()),
        };
        if host.is_empty() {
            return Err("missing host".into());
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| "credentials are not valid percent-encoded UTF-8".to_owned())
        };
        let userinfo = if url.username().is_empty() && url.password().is_none() {
            None
        } else {
            Some((
                decode(url.username())?,
                decode(url.password().unwrap_or_default())?,
            ))
        };
        let port = url.port().unwrap_or(default_port);
        // Cannot fail for a URL with a host: only cannot-be-a-base URLs refuse these.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(Self {
            scheme,
            host,
            port,
            url: url.to_string(),
            userinfo,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_hosts_and_default_ports() {
        let u = BrokerUrl::parse("mqtts://broker.example:8884").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (BrokerScheme::Mqtts, "broker.example", 8884)
        );
        assert_eq!(BrokerUrl::parse("mqtt://127.0.0.1").unwrap().port, 1883);
        assert_eq!(BrokerUrl::parse("wss://b.example/mqtt").unwrap().port, 443);
        let u = BrokerUrl::parse("ws://[::1]:9001/mqtt").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 9001));
        assert_eq!(u.url, "ws://[::1]:9001/mqtt");
        for bad in [
            "127.0.0.1:1883",
            "http://x",
            "mqtt://",
            "mqtt://h:99999",
            "mqtt://:1883",
        ] {
            assert!(BrokerUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn userinfo_is_taken_out_of_the_url_and_never_shown() {
        let u = BrokerUrl::parse("mqtt://cam:p%40ss%3Aword@broker.example:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("broker.example", 1884));
        assert_eq!(u.userinfo, Some(("cam".to_owned(), "p@ss:word".to_owned())));
        assert_eq!(u.url, "mqtt://broker.example:1884");
        let shown = format!("{u:?}");
        assert!(
            !shown.contains("ss") && shown.contains("redacted"),
            "{shown}"
        );
        let ws = BrokerUrl::parse("wss://u:pw@b.example/mqtt").unwrap();
        assert_eq!(ws.url, "wss://b.example/mqtt");
    }
}
