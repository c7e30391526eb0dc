//! Deserializers for the config's scalar values, with messages in the user's terms.
//!
//! serde's own messages name Rust types (`invalid type: integer -1, expected usize`);
//! these visitors say what the key wants instead ("a whole number of bytes (e.g. 65536)"),
//! quote what was written, and add a hint for the usual slips (`64KB`, `-1` for
//! "unlimited", `yes` for `true`, a bare port for an address).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use serde::de::{self, Deserializer, Visitor};

/// What a whole-number key holds, for its messages.
#[derive(Clone, Copy)]
enum Whole {
    /// A size in bytes (`buffer.size`).
    Bytes,
    /// A plain count (`max_in_flight`, `rise`).
    Count,
    /// A limit, where `-1` is a common attempt at "unlimited".
    Limit,
}

impl Whole {
    fn expected(self) -> &'static str {
        match self {
            Whole::Bytes => "a whole number of bytes (e.g. 65536)",
            Whole::Count | Whole::Limit => "a non-negative whole number",
        }
    }
}

struct WholeVisitor {
    kind: Whole,
    max: u64,
}

impl WholeVisitor {
    fn got<E: de::Error>(&self, got: impl fmt::Display) -> E {
        E::custom(format!("{} expected, got {got}", self.kind.expected()))
    }
}

impl<'de> Visitor<'de> for WholeVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.kind.expected())
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
        if n > self.max {
            return Err(E::custom(format!(
                "{} expected, got {n}: the largest value is {}",
                self.kind.expected(),
                self.max
            )));
        }
        Ok(n)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
        if let Ok(n) = u64::try_from(n) {
            return self.visit_u64(n);
        }
        Err(match self.kind {
            Whole::Limit if n == -1 => {
                self.got("-1: there is no \"unlimited\" value; write the largest number you mean")
            }
            _ => self.got(format_args!("{n}: negative numbers are not allowed")),
        })
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<u64, E> {
        Err(self.got(format_args!("{n:?}: no fractions or exponents")))
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<u64, E> {
        Err(self.got(format_args!("`{b}`")))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
        let hint = match (self.kind, with_unit(s)) {
            (Whole::Bytes, Some(bytes)) => {
                format!(": sizes take no unit; write {bytes} for `{}`", s.trim())
            }
            (_, _) if s.trim().parse::<i128>().is_ok() => {
                ": write the number without quotes".to_string()
            }
            _ => String::new(),
        };
        Err(self.got(format_args!("`{s}`{hint}")))
    }

    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Err(self.got("nothing (the key has no value)"))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<u64, A::Error> {
        Err(self.got("a list"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<u64, A::Error> {
        Err(self.got("a mapping"))
    }
}

/// `64KB`, `64k`, `1MiB`... as bytes (binary multiples, as the spec's `65536 # 64KB`).
fn with_unit(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let n: u64 = s[..digits].parse().ok()?;
    let mult: u64 = match s[digits..].trim().to_ascii_lowercase().as_str() {
        "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn whole<'de, D: Deserializer<'de>>(d: D, kind: Whole, max: u64) -> Result<u64, D::Error> {
    // deserialize_any so that every kind of value reaches the visitor and its message.
    d.deserialize_any(WholeVisitor { kind, max })
}

/// A size in bytes (`buffer.size`).
pub fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    whole(d, Whole::Bytes, usize::MAX as u64).map(|n| n as usize)
}

/// A count (`max_in_flight`).
pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    whole(d, Whole::Count, usize::MAX as u64).map(|n| n as usize)
}

/// A small count (`rise`, `fall`).
pub fn count32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    whole(d, Whole::Count, u64::from(u32::MAX)).map(|n| n as u32)
}

/// A limit (`max_active`, `max_idle`, `max_queued`, `max_pool_size`).
pub fn limit<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    whole(d, Whole::Limit, usize::MAX as u64).map(|n| n as usize)
}

/// A small limit (`max_retries`).
pub fn limit32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    whole(d, Whole::Limit, u64::from(u32::MAX)).map(|n| n as u32)
}

/// `true` or `false`; YAML 1.1's `yes`/`on` are strings in YAML 1.2 and get a hint.
pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("`true` or `false`")
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<bool, E> {
            Ok(b)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<bool, E> {
            let hint = match s.trim().to_ascii_lowercase().as_str() {
                "yes" | "on" | "y" | "true" => ": write `true`",
                "no" | "off" | "n" | "false" => ": write `false`",
                _ => "",
            };
            Err(E::custom(format!(
                "`true` or `false` expected, got `{s}`{hint}"
            )))
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<bool, E> {
            Err(E::custom(format!("`true` or `false` expected, got `{n}`")))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<bool, E> {
            Err(E::custom(format!("`true` or `false` expected, got `{n}`")))
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<bool, E> {
            Err(E::custom(format!("`true` or `false` expected, got `{n}`")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
            Err(E::custom(
                "`true` or `false` expected, got nothing (the key has no value)",
            ))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<bool, A::Error> {
            Err(de::Error::custom("`true` or `false` expected, got a list"))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<bool, A::Error> {
            Err(de::Error::custom(
                "`true` or `false` expected, got a mapping",
            ))
        }
    }
    d.deserialize_any(V)
}

/// One of a fixed list of words (`balance`, `send_mode`): the value or a message listing
/// the choices and quoting what was written.
pub fn one_of<'de, D: Deserializer<'de>, T: Copy>(
    d: D,
    choices: &'static [(&'static str, T)],
) -> Result<T, D::Error> {
    struct V<T: 'static>(&'static [(&'static str, T)]);
    impl<T: 'static> V<T> {
        fn expected(&self) -> String {
            let names: Vec<String> = self.0.iter().map(|(n, _)| format!("`{n}`")).collect();
            format!("one of {} expected", names.join(", "))
        }
    }
    impl<'de, T: Copy + 'static> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(&self.expected())
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            match self.0.iter().find(|(n, _)| *n == s.trim()) {
                Some((_, v)) => Ok(*v),
                None => Err(E::custom(format!("{}, got `{s}`", self.expected()))),
            }
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
            Err(E::custom(format!("{}, got `{n}`", self.expected())))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
            Err(E::custom(format!("{}, got `{n}`", self.expected())))
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<T, E> {
            Err(E::custom(format!("{}, got `{n}`", self.expected())))
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<T, E> {
            Err(E::custom(format!("{}, got `{b}`", self.expected())))
        }
        fn visit_unit<E: de::Error>(self) -> Result<T, E> {
            Err(E::custom(format!(
                "{}, got nothing (the key has no value)",
                self.expected()
            )))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<T, A::Error> {
            Err(de::Error::custom(format!(
                "{}, got a list",
                self.expected()
            )))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<T, A::Error> {
            Err(de::Error::custom(format!(
                "{}, got a mapping",
                self.expected()
            )))
        }
    }
    d.deserialize_any(V(choices))
}

/// The accepted forms of a listen address, for messages.
pub const LISTEN_FORMS: &str =
    "`ip:port`, `[ipv6]:port`, `:port` (every IPv4 address) or `host:port`";

/// Parses a listen address: `127.0.0.1:8443`, `[::1]:8443`, `:8443` or `*:8443` (every
/// IPv4 address, as HAProxy and nginx read it), or `localhost:8443` (a name, resolved
/// now; its first IPv4 address is used, else its first address). A port alone is
/// refused: it does not say whether every interface is meant.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    let fail = |why: &str| format!("{LISTEN_FORMS} expected, got `{s}`{why}");
    if t.is_empty() {
        return Err(fail(""));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail(&format!(
            ": a port alone does not say which addresses; write `:{t}` for every IPv4 \
             address or `127.0.0.1:{t}` for this machine only"
        )));
    }
    let (host, port) = if let Some(rest) = t.strip_prefix('[') {
        let Some((h, p)) = rest.split_once(']') else {
            return Err(fail(": `]` missing"));
        };
        let Some(p) = p.strip_prefix(':') else {
            return Err(fail(": the port is missing after `]`"));
        };
        (h, p)
    } else {
        let Some((h, p)) = t.rsplit_once(':') else {
            return Err(fail(": the port is missing"));
        };
        if h.contains(':') {
            return Err(fail(
                ": write IPv6 addresses in brackets, e.g. `[::1]:8443`",
            ));
        }
        (h, p)
    };
    let port: u16 = port
        .parse()
        .map_err(|_| fail(&format!(": the port must be 0..65535, got `{port}`")))?;
    if host.is_empty() || host == "*" {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if t.starts_with('[') {
        return Err(fail(&format!(": `{host}` is not an IPv6 address")));
    }
    let name_ok = host
        .split('.')
        .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !name_ok {
        return Err(fail(&format!(
            ": `{host}` is neither an IP address nor a host name"
        )));
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| fail(&format!(": cannot resolve `{host}`: {e}")))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| fail(&format!(": `{host}` resolves to no address")))
}

/// `#[serde(deserialize_with = "listen")]`.
pub fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = SocketAddr;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(LISTEN_FORMS)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<SocketAddr, E> {
            parse_listen(s).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<SocketAddr, E> {
            parse_listen(&n.to_string()).map_err(E::custom)
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<SocketAddr, E> {
            Err(E::custom(format!("{LISTEN_FORMS} expected, got `{n}`")))
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<SocketAddr, E> {
            Err(E::custom(format!("{LISTEN_FORMS} expected, got `{n}`")))
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<SocketAddr, E> {
            Err(E::custom(format!("{LISTEN_FORMS} expected, got `{b}`")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<SocketAddr, E> {
            Err(E::custom(format!(
                "{LISTEN_FORMS} expected, got nothing (the key has no value)"
            )))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<SocketAddr, A::Error> {
            Err(de::Error::custom(format!(
                "{LISTEN_FORMS} expected, got a list (one address per listener)"
            )))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<SocketAddr, A::Error> {
            Err(de::Error::custom(format!(
                "{LISTEN_FORMS} expected, got a mapping"
            )))
        }
    }
    d.deserialize_any(V)
}

/// `upstreams: a:1` as well as `upstreams: [a:1, b:2]`; the `host:port` shape is checked
/// in validation, where the message can name the item's index.
pub fn upstreams<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    const WANT: &str = "a `host:port` endpoint or a list of them expected";
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str(WANT)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Vec<String>, E> {
            Ok(vec![s.to_string()])
        }
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<Vec<String>, E> {
            Err(E::custom(format!(
                "{WANT}, got `{n}`: a port alone; write `host:port`, e.g. `127.0.0.1:{n}`"
            )))
        }
        fn visit_i64<E: de::Error>(self, n: i64) -> Result<Vec<String>, E> {
            Err(E::custom(format!("{WANT}, got `{n}`")))
        }
        fn visit_f64<E: de::Error>(self, n: f64) -> Result<Vec<String>, E> {
            Err(E::custom(format!("{WANT}, got `{n}`")))
        }
        fn visit_bool<E: de::Error>(self, b: bool) -> Result<Vec<String>, E> {
            Err(E::custom(format!("{WANT}, got `{b}`")))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Vec<String>, E> {
            Err(E::custom(format!(
                "{WANT}, got nothing (the key has no value)"
            )))
        }
        fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<Vec<String>, A::Error> {
            Err(de::Error::custom(format!("{WANT}, got a mapping")))
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<serde_yaml::Value>()? {
                match item {
                    serde_yaml::Value::String(s) => out.push(s),
                    serde_yaml::Value::Number(n) => {
                        return Err(de::Error::custom(format!(
                            "item {}: `host:port` expected, got `{n}`",
                            out.len()
                        )))
                    }
                    _ => {
                        return Err(de::Error::custom(format!(
                            "item {}: `host:port` expected, got a list or a mapping",
                            out.len()
                        )))
                    }
                }
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        let v4 = |s: &str| s.parse::<SocketAddr>().expect("literal");
        assert_eq!(parse_listen("127.0.0.1:8443"), Ok(v4("127.0.0.1:8443")));
        assert_eq!(parse_listen(":8443"), Ok(v4("0.0.0.0:8443")));
        assert_eq!(parse_listen("*:8443"), Ok(v4("0.0.0.0:8443")));
        assert_eq!(parse_listen("[::1]:8443"), Ok(v4("[::1]:8443")));
        assert_eq!(parse_listen("[::]:0"), Ok(v4("[::]:0")));
        assert!(parse_listen("localhost:8443").is_ok_and(|a| a.ip().is_loopback()));
        for (bad, why) in [
            ("8443", "`:8443` for every IPv4 address"),
            ("localhost", "port is missing"),
            ("::1:8443", "brackets"),
            ("127.0.0.1:99999", "0..65535, got `99999`"),
            ("[::1]8443", "port is missing after"),
            ("[nope]:1", "not an IPv6 address"),
            ("a b:1", "neither an IP address nor a host name"),
            ("", "expected, got ``"),
        ] {
            let e = parse_listen(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes_with_units_get_the_number() {
        assert_eq!(with_unit("64KB"), Some(65536));
        assert_eq!(with_unit("1 MiB"), Some(1 << 20));
        assert_eq!(with_unit("64"), None);
        assert_eq!(with_unit("lots"), None);
    }
}
