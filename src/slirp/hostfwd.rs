//! Host forwarding rules in bhyve's syntax.
//!
//! A rule is `proto:hostaddr:hostport-guestaddr:guestport`, for example
//! `tcp:127.0.0.1:2222-:22`; several are joined with `;`. An empty host
//! address means any (0.0.0.0), an empty guest address the stack's default
//! guest (the DHCP start address). IPv6 addresses go in brackets:
//! `tcp:[::1]:2222-[fd00::15]:22`; an IPv6 forward needs an IPv6 guest
//! address (libslirp 4.7 forwards within one address family), and an empty
//! host address with an IPv6 guest means `[::]`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The transport a rule forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// TCP: a listening socket on the host, one connection into the guest
    /// per accepted connection.
    Tcp,
    /// UDP: a bound socket on the host whose datagrams go to the guest.
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One host forward: connections or datagrams to `host_addr:host_port` on
/// the host go to `guest_addr:guest_port` in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// TCP or UDP.
    pub proto: Proto,
    /// Host address to bind; `None` is any IPv4 address (0.0.0.0).
    pub host_addr: Option<IpAddr>,
    /// Host port to bind (0 lets the kernel choose).
    pub host_port: u16,
    /// Guest address; `None` is the stack's default guest (the DHCP start).
    pub guest_addr: Option<IpAddr>,
    /// Guest port, never 0.
    pub guest_port: u16,
    /// With the own TCP path: whether a connection through this forward
    /// reaches the guest from the real client's address (see
    /// [`Config::hostfwd_real_source`](super::Config::hostfwd_real_source));
    /// `None` follows that setting. Not part of the rule's text.
    pub real_source: Option<bool>,
}

/// A rule that does not parse: names the whole rule and the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule:?}: {problem}")]
pub struct RuleError {
    /// The whole rule as given.
    pub rule: String,
    /// What is wrong with it.
    pub problem: String,
}

impl Rule {
    /// The host side as a socket address. Unset is any address: 0.0.0.0,
    /// or `[::]` when the guest address is IPv6.
    pub fn host_socket_addr(&self) -> std::net::SocketAddr {
        let any = match self.guest_addr {
            Some(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        std::net::SocketAddr::new(self.host_addr.unwrap_or(any), self.host_port)
    }

    /// The guest side, with `default_guest` standing in for an unset address.
    pub fn guest_socket_addr(&self, default_guest: Ipv4Addr) -> std::net::SocketAddr {
        let ip = self.guest_addr.unwrap_or(IpAddr::V4(default_guest));
        std::net::SocketAddr::new(ip, self.guest_port)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}-{}:{}",
            self.proto,
            AddrText(self.host_addr),
            self.host_port,
            AddrText(self.guest_addr),
            self.guest_port
        )
    }
}

struct AddrText(Option<IpAddr>);

impl fmt::Display for AddrText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => Ok(()),
            Some(IpAddr::V4(a)) => write!(f, "{a}"),
            Some(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(rule: &str) -> Result<Rule, RuleError> {
        let err = |problem: String| RuleError {
            rule: rule.to_string(),
            problem,
        };
        let (proto, rest) = rule
            .split_once(':')
            .ok_or_else(|| err("expected proto:hostaddr:hostport-guestaddr:guestport".into()))?;
        let proto = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            _ => return Err(err(format!("protocol {proto:?} is not tcp or udp"))),
        };
        let (host, guest) = rest
            .split_once('-')
            .ok_or_else(|| err("missing '-' between the host side and the guest side".into()))?;
        let (host_addr, host_port) = endpoint(host, "host").map_err(&err)?;
        let (guest_addr, guest_port) = endpoint(guest, "guest").map_err(&err)?;
        if guest_port == 0 {
            return Err(err("guest port 0 is not allowed".into()));
        }
        Ok(Rule {
            proto,
            host_addr,
            host_port,
            guest_addr,
            guest_port,
            real_source: None,
        })
    }
}

/// Parses `addr:port`, `[v6addr]:port` or `:port`.
fn endpoint(s: &str, side: &str) -> Result<(Option<IpAddr>, u16), String> {
    let (addr, port) = if let Some(rest) = s.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{side} address {s:?} has no closing ']'"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("{side} side {s:?} needs ':port' after ']'"))?;
        let a = Ipv6Addr::from_str(inside)
            .map_err(|_| format!("{side} address {inside:?} is not an IPv6 address"))?;
        (Some(IpAddr::V6(a)), port)
    } else {
        let (addr, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{side} side {s:?} is not addr:port"))?;
        let a = if addr.is_empty() {
            None
        } else if addr.contains(':') {
            return Err(format!(
                "{side} address {addr:?} looks like IPv6: put it in brackets"
            ));
        } else {
            Some(IpAddr::V4(Ipv4Addr::from_str(addr).map_err(|_| {
                format!("{side} address {addr:?} is not an IPv4 address")
            })?))
        };
        (a, port)
    };
    let bad_port = || format!("{side} port {port:?} is not a port number");
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad_port());
    }
    let port = port.parse::<u16>().map_err(|_| bad_port())?;
    Ok((addr, port))
}

/// Parses a `;`-separated list of rules (bhyve's `hostfwd` option); empty
/// entries are skipped.
pub fn parse_rules(s: &str) -> Result<Vec<Rule>, RuleError> {
    s.split(';')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(Rule::from_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rule(s: &str) -> Rule {
        s.parse().unwrap()
    }

    #[test]
    fn bhyve_examples() {
        let r = parse_rules("tcp:127.0.0.1:2222-:22;udp::5353-:53").unwrap();
        assert_eq!(
            r,
            vec![
                Rule {
                    proto: Proto::Tcp,
                    host_addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                    host_port: 2222,
                    guest_addr: None,
                    guest_port: 22,
                    real_source: None,
                },
                Rule {
                    proto: Proto::Udp,
                    host_addr: None,
                    host_port: 5353,
                    guest_addr: None,
                    guest_port: 53,
                    real_source: None,
                },
            ]
        );
        assert_eq!(r[0].to_string(), "tcp:127.0.0.1:2222-:22");
        assert_eq!(r[1].to_string(), "udp::5353-:53");
        assert_eq!(
            r[1].guest_socket_addr(Ipv4Addr::new(10, 0, 2, 15)),
            "10.0.2.15:53".parse().unwrap()
        );
        assert_eq!(r[1].host_socket_addr(), "0.0.0.0:5353".parse().unwrap());
    }

    #[test]
    fn ipv6_in_brackets() {
        let r = rule("tcp:[::1]:2222-[fd00::15]:22");
        assert_eq!(r.host_addr, Some("::1".parse().unwrap()));
        assert_eq!(r.guest_addr, Some("fd00::15".parse().unwrap()));
        assert_eq!(r.to_string(), "tcp:[::1]:2222-[fd00::15]:22");
        let r = rule("TCP:[::]:80-10.0.2.16:8080");
        assert_eq!(r.to_string(), "tcp:[::]:80-10.0.2.16:8080");
        let r = rule("udp::53-[fd00::15]:53");
        assert_eq!(r.host_socket_addr(), "[::]:53".parse().unwrap());
    }

    #[test]
    fn errors_name_rule_and_part() {
        let cases = [
            (
                "tcp:127.0.0.1:99999-:22",
                r#"rule "tcp:127.0.0.1:99999-:22": host port "99999" is not a port number"#,
            ),
            (
                "sctp::1-:2",
                r#"rule "sctp::1-:2": protocol "sctp" is not tcp or udp"#,
            ),
            (
                "tcp::2222:22",
                r#"rule "tcp::2222:22": missing '-' between the host side and the guest side"#,
            ),
            (
                "tcp:1.2.3:2222-:22",
                r#"rule "tcp:1.2.3:2222-:22": host address "1.2.3" is not an IPv4 address"#,
            ),
            (
                "tcp::2222-:0",
                r#"rule "tcp::2222-:0": guest port 0 is not allowed"#,
            ),
            (
                "tcp::2222-:",
                r#"rule "tcp::2222-:": guest port "" is not a port number"#,
            ),
            (
                "tcp:::1:2222-:22",
                r#"rule "tcp:::1:2222-:22": host address "::1" looks like IPv6: put it in brackets"#,
            ),
            (
                "tcp:[::1:2222-:22",
                r#"rule "tcp:[::1:2222-:22": host address "[::1:2222" has no closing ']'"#,
            ),
            (
                "tcp:[10.0.0.1]:1-:2",
                r#"rule "tcp:[10.0.0.1]:1-:2": host address "10.0.0.1" is not an IPv6 address"#,
            ),
            (
                "tcp::+22-:22",
                r#"rule "tcp::+22-:22": host port "+22" is not a port number"#,
            ),
            (
                "tcp",
                r#"rule "tcp": expected proto:hostaddr:hostport-guestaddr:guestport"#,
            ),
        ];
        for (r, want) in cases {
            assert_eq!(r.parse::<Rule>().unwrap_err().to_string(), want, "{r}");
        }
        let e = parse_rules("tcp::1-:2;;udp::x-:3").unwrap_err();
        assert_eq!(e.rule, "udp::x-:3");
    }

    fn arb_addr() -> impl Strategy<Value = Option<IpAddr>> {
        prop_oneof![
            Just(None),
            any::<u32>().prop_map(|a| Some(IpAddr::V4(Ipv4Addr::from(a)))),
            any::<u128>().prop_map(|a| Some(IpAddr::V6(Ipv6Addr::from(a)))),
        ]
    }

    proptest! {
        #[test]
        fn display_reparses(
            udp in any::<bool>(),
            host_addr in arb_addr(),
            host_port in any::<u16>(),
            guest_addr in arb_addr(),
            guest_port in 1u16..,
        ) {
            let r = Rule {
                proto: if udp { Proto::Udp } else { Proto::Tcp },
                host_addr,
                host_port,
                guest_addr,
                guest_port,
                real_source: None,
            };
            let text = r.to_string();
            prop_assert_eq!(text.parse::<Rule>(), Ok(r));
            prop_assert_eq!(parse_rules(&format!("{text};{text}")), Ok(vec![r, r]));
        }

        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = s.parse::<Rule>();
        }
    }
}
