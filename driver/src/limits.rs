//! The open-file limit. Every connection holds two file descriptors (the client's and the backend's), so
//! the soft `RLIMIT_NOFILE` caps how many players a proxy can carry: 1,024 under systemd and most shells,
//! about 500 players. Like the JVM that runs other proxies (`-XX:+MaxFDLimit`, on by default) and the Go
//! runtime, nethergate raises its soft limit to the hard limit at startup, and warns when even that is too
//! low for `max_connections`.

use std::io;

/// Descriptors kept aside for what is not a connection: standard streams, listeners and reactors (one
/// per thread), the signal pipe, the directory watch, the log writer, a Docker socket, name lookups and
/// config reads.
const RESERVED: u64 = 32;

/// With `max_connections` unlimited, a limit below this is warned about (it allows about 2,000
/// connections).
const LOW: u64 = 4_096;

/// The soft open-file limit before and after [`raise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now (the hard limit, unless the system refused).
    pub now: u64,
}

/// Raises the soft open-file limit to the hard limit (on macOS, to `kern.maxfilesperproc` at most). On
/// platforms without the limit, `before` and `now` are `u64::MAX`.
pub fn raise() -> io::Result<OpenFiles> {
    #[cfg(unix)]
    let before = rlimit::Resource::NOFILE
        .get()
        .map_or(u64::MAX, |(soft, _)| soft);
    #[cfg(not(unix))]
    let before = u64::MAX;
    let now = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok(OpenFiles { before, now })
}

/// The hard open-file limit, which [`raise`] makes the soft one at startup; `None` where there is none
/// (or it cannot be read).
pub fn hard() -> Option<u64> {
    #[cfg(unix)]
    return rlimit::Resource::NOFILE
        .get()
        .ok()
        .map(|(_, hard)| hard)
        .filter(|&h| h != rlimit::INFINITY);
    #[cfg(not(unix))]
    None
}

/// About how many concurrent connections `limit` descriptors allow.
pub fn connections_allowed(limit: u64) -> u64 {
    limit.saturating_sub(RESERVED) / 2
}

/// Why `limit` open files are too few for `max_connections` (0: unlimited), if they are.
pub fn shortfall(limit: u64, max_connections: usize) -> Option<String> {
    let allowed = connections_allowed(limit);
    let (short, wanted) = match max_connections {
        0 => (limit < LOW, "unlimited".to_owned()),
        n => (
            u64::try_from(n).unwrap_or(u64::MAX) > allowed,
            n.to_string(),
        ),
    };
    short.then(|| {
        format!(
            "max_connections is {wanted}, but the open-file limit of {limit} allows about {allowed} \
             connections (2 descriptors each, zero_copy 4 more while bytes are in flight); raise the hard \
             limit (systemd: LimitNOFILE=, Docker: --ulimit nofile=, a shell: ulimit -Hn) or lower \
             max_connections"
        )
    })
}

/// Raises the limit and logs what happened: an info line when it was raised, a warning when it is too
/// low for `max_connections` or could not be read or raised.
pub fn raise_and_report(max_connections: usize) {
    match raise() {
        Ok(files) => {
            if files.now > files.before {
                tracing::info!(
                    from = files.before,
                    to = files.now,
                    "raised the open-file limit"
                );
            }
            if let Some(why) = shortfall(files.now, max_connections) {
                tracing::warn!("{why}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_counts_two_descriptors_after_the_reserve() {
        assert_eq!(connections_allowed(1_024), 496);
        assert_eq!(connections_allowed(10), 0);
        assert_eq!(connections_allowed(u64::MAX), (u64::MAX - RESERVED) / 2);
    }

    #[test]
    fn unlimited_connections_warn_only_under_a_low_limit() {
        let low = shortfall(1_024, 0);
        assert!(
            low.as_deref()
                .is_some_and(|w| w.contains("unlimited") && w.contains("about 496")),
            "{low:?}"
        );
        assert_eq!(shortfall(LOW, 0), None);
        assert_eq!(shortfall(524_288, 0), None);
    }

    #[test]
    fn a_limit_too_low_for_max_connections_is_warned_about() {
        let short = shortfall(1_024, 500);
        assert!(
            short
                .as_deref()
                .is_some_and(|w| w.contains("max_connections is 500") && w.contains("LimitNOFILE")),
            "{short:?}"
        );
        assert_eq!(shortfall(1_024, 496), None);
        assert_eq!(shortfall(1_048_576, 100_000), None);
        assert!(shortfall(1_048_576, usize::MAX).is_some());
    }

    #[test]
    fn raising_never_lowers_the_limit() {
        let files = raise();
        assert!(files.as_ref().is_ok_and(|f| f.now >= f.before), "{files:?}");
    }
}
