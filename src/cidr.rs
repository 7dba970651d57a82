//! CIDR blocks for client IP allowlists, on `core::net` (no std needed).
//!
//! One rule for IPv4-mapped IPv6 addresses: `::ffff:a.b.c.d` is the IPv4 address `a.b.c.d`, on
//! both sides of the match, so a dual-stack listener that reports `::ffff:10.0.0.7` matches the
//! rule `10.0.0.0/8`, and a rule written `::ffff:10.0.0.0/104` is the rule `10.0.0.0/8`.
//! A block is stored normalised (host bits cleared), and parsing accepts exactly the canonical
//! spelling `addr/len` or a bare address (a `/32` or `/128`); a block with host bits set, such as
//! `10.0.0.1/8`, is refused as the likely typo it is.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

/// An IPv4 or IPv6 network, such as `10.0.0.0/8` or `2001:db8::/32`.
///
/// ```
/// use keygate::IpCidr;
/// let net: IpCidr = "10.0.0.0/8".parse()?;
/// assert!(net.contains("10.1.2.3".parse()?));
/// assert!(net.contains("::ffff:10.1.2.3".parse()?));
/// assert!(!net.contains("11.0.0.1".parse()?));
/// # Ok::<(), Box<dyn core::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpCidr {
    addr: IpAddr,
    len: u8,
}

/// The text is not a CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// Not an IP address, optionally followed by `/` and a decimal prefix length.
    #[error("not an IP address or CIDR block")]
    Syntax,
    /// The prefix length exceeds 32 (IPv4) or 128 (IPv6).
    #[error("CIDR prefix length out of range")]
    PrefixLength,
    /// Bits beyond the prefix are set (e.g. `10.0.0.1/8`; write `10.0.0.0/8`).
    #[error("CIDR block has host bits set")]
    HostBits,
}

impl IpCidr {
    /// The block of `addr` with a prefix of `len` bits.
    ///
    /// # Errors
    ///
    /// [`CidrError::PrefixLength`] if `len` exceeds the address width; [`CidrError::HostBits`] if
    /// `addr` has bits set beyond the prefix.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, CidrError> {
        let (addr, len) = canonical(addr, len)?;
        if bits(addr) & !mask(addr, len) != 0 {
            return Err(CidrError::HostBits);
        }
        Ok(Self { addr, len })
    }

    /// The network address.
    #[must_use]
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    #[must_use]
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` lies in this block (IPv4-mapped IPv6 addresses count as IPv4).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = unmap(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && bits(ip) & mask(ip, self.len) == bits(self.addr)
    }
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Unmaps IPv4-mapped IPv6 blocks (`::ffff:0:0/96` and narrower) to IPv4 and checks the length.
fn canonical(addr: IpAddr, len: u8) -> Result<(IpAddr, u8), CidrError> {
    match addr {
        IpAddr::V4(_) if len <= 32 => Ok((addr, len)),
        IpAddr::V6(v6) if len <= 128 => match v6.to_ipv4_mapped() {
            Some(v4) if len >= 96 => Ok((IpAddr::V4(v4), len - 96)),
            _ => Ok((addr, len)),
        },
        _ => Err(CidrError::PrefixLength),
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(ip: IpAddr, len: u8) -> u128 {
    let width: u32 = if ip.is_ipv4() { 32 } else { 128 };
    let full = if width == 32 { u128::from(u32::MAX) } else { u128::MAX };
    let host = width - u32::from(len);
    if host >= 128 { 0 } else { full & !((1u128 << host) - 1) }
}

impl FromStr for IpCidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => {
                let canonical_len = !l.is_empty()
                    && l.len() <= 3
                    && l.bytes().all(|c| c.is_ascii_digit())
                    && (l == "0" || !l.starts_with('0'));
                if !canonical_len {
                    return Err(CidrError::Syntax);
                }
                (a, Some(l.parse::<u8>().map_err(|_| CidrError::PrefixLength)?))
            }
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::Syntax)?;
        let len = len.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        Self::new(addr, len)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl fmt::Debug for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpCidr({self})")
    }
}

impl From<Ipv4Addr> for IpCidr {
    fn from(a: Ipv4Addr) -> Self {
        Self { addr: IpAddr::V4(a), len: 32 }
    }
}

impl From<Ipv6Addr> for IpCidr {
    fn from(a: Ipv6Addr) -> Self {
        let (addr, len) = canonical(IpAddr::V6(a), 128).unwrap_or((IpAddr::V6(a), 128));
        Self { addr, len }
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for IpCidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for IpCidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IpCidr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CIDR block such as \"10.0.0.0/8\" or \"2001:db8::/32\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IpCidr, E> {
                v.parse().map_err(|e: CidrError| E::custom(e))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_and_v6_blocks() {
        let n: IpCidr = "192.168.0.0/16".parse().unwrap();
        assert!(n.contains(ip("192.168.255.1")) && !n.contains(ip("192.169.0.1")));
        let n: IpCidr = "2001:db8::/32".parse().unwrap();
        assert!(n.contains(ip("2001:db8:ffff::1")) && !n.contains(ip("2001:db9::1")));
        assert!(!n.contains(ip("10.0.0.1")));
        let all: IpCidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("255.255.255.255")) && all.contains(ip("::ffff:1.2.3.4")) && !all.contains(ip("::1")));
        let host: IpCidr = "10.0.0.7".parse().unwrap();
        assert_eq!(host.to_string(), "10.0.0.7/32");
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        let n: IpCidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(n.to_string(), "10.0.0.0/8");
        assert!(n.contains(ip("10.9.9.9")));
    }

    #[test]
    fn one_spelling() {
        for (s, e) in [
            ("10.0.0.1/8", CidrError::HostBits),
            ("10.0.0.0/33", CidrError::PrefixLength),
            ("10.0.0.0/08", CidrError::Syntax),
            ("10.0.0.0/", CidrError::Syntax),
            ("10.0.0.0/+8", CidrError::Syntax),
            ("10.0.0/8", CidrError::Syntax),
            (" 10.0.0.0/8", CidrError::Syntax),
            ("::/129", CidrError::PrefixLength),
        ] {
            assert_eq!(s.parse::<IpCidr>(), Err(e), "{s}");
        }
    }
}
