//! Host lists of multi-server URLs (`h1:2379,h2:2379`, `[::1]:2181`).

/// Splits `list` into `host:port` entries (IPv6 addresses in brackets),
/// adding `default_port` where none is given.
///
/// # Errors
/// A message naming the bad entry: an empty list or entry, an unclosed
/// `[`, a host with `:`, `/`, `@`, whitespace or control characters, a port
/// that is not 1..=65535. The list comes after the last `@` of a URL, so it
/// never holds credentials.
///
/// ```
/// use lockkit_core::spi::parse_host_list;
///
/// assert_eq!(
///     parse_host_list("zk1:2181,zk2,[::1]:2182", 2181).unwrap(),
///     ["zk1:2181", "zk2:2181", "[::1]:2182"]
/// );
/// assert!(parse_host_list("h:0", 1).is_err());
/// assert!(parse_host_list("h1,,h2", 1).is_err());
/// ```
pub fn parse_host_list(list: &str, default_port: u16) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err("no host given".to_owned());
    }
    list.split(',')
        .map(|host| host_port(host, default_port))
        .collect()
}

fn host_port(raw: &str, default_port: u16) -> Result<String, String> {
    if raw.is_empty() {
        return Err("empty host in the host list".to_owned());
    }
    let (host, port) = if let Some(v6) = raw.strip_prefix('[') {
        let (addr, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("unclosed `[` in {raw:?}"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("junk after `]` in {raw:?}"))?,
            ),
        };
        (format!("[{addr}]"), port)
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (raw.to_owned(), None),
        }
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty()
        || (!host.starts_with('[') && host.contains(':'))
        || host.contains(['/', '@'])
        || host.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!("invalid host {host:?}"));
    }
    let port = match port {
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("invalid port {p:?} in {raw:?}"))?,
        None => default_port,
    };
    Ok(format!("{host}:{port}"))
}
