//! Time limits that are valid but so short they are almost surely mistakes: warned about, not refused.

use super::ConfigIssue;
use std::time::Duration;

/// A time limit shorter than this is valid but almost surely a mistake (a unit slip, `"1ms"` for
/// `"1m"`): it would close players who did nothing wrong. Such a value is warned about, not refused.
pub(super) struct Floor {
    key: &'static str,
    floor: Duration,
    why: &'static str,
}

pub(super) const HANDSHAKE_FLOOR: Floor = Floor {
    key: "handshake_timeout",
    floor: Duration::from_secs(1),
    why:
        "a handshake held up by one lost packet (a resend takes at least 200 ms) or by a slow link \
          arrives after it, and that player is closed before logging in",
};

pub(super) const TIMEOUT_FLOORS: [Floor; 3] = [
    Floor {
        key: "timeouts.connect",
        floor: Duration::from_millis(100),
        why: "the limit covers resolving the backend's name and dialling each of its addresses in \
              turn, and a dial across a network takes at least a round trip, so dials to a distant \
              backend time out and the player is told the server is unreachable",
    },
    Floor {
        key: "timeouts.read",
        floor: Duration::from_secs(20),
        why: "a vanilla server sends a keep-alive only every 15 s (later when it lags), and a client is \
              silent while it logs in with Mojang or sits on a loading screen, so sessions in a quiet \
              moment are cut off with reason Timeout",
    },
    Floor {
        key: "timeouts.write",
        floor: Duration::from_secs(5),
        why: "TCP resends a lost packet after 200 ms or more and doubles that wait at every further \
              loss, so a player on a congested or flaky link (Wi-Fi, an uplink filled by a download) \
              takes nothing for seconds at a time and is cut off with reason Timeout",
    },
];

/// `[docker]`'s two intervals: each poll lists every container from the daemon, and each reconnect is a
/// dial of it; changes arrive by the event stream at once anyway.
pub(super) const DOCKER_FLOORS: [Floor; 2] = [
    Floor {
        key: "docker.poll_interval",
        floor: Duration::from_secs(1),
        why: "every poll asks the daemon for the whole container list, so the proxy keeps it busy (the \
              event stream brings changes in at once; the poll only catches what it missed)",
    },
    Floor {
        key: "docker.reconnect_delay",
        floor: Duration::from_millis(100),
        why: "while the daemon is away the proxy dials it again this often",
    },
];

impl Floor {
    /// A warning when `value` is under the floor; `default` is the key's default, named as the way out.
    /// The key is named as `key_prefix` + the file's key (`nethergate.timeouts.read` for a label).
    pub(super) fn check(
        &self,
        source: &str,
        key_prefix: &str,
        value: Duration,
        default: Duration,
    ) -> Option<ConfigIssue> {
        (value < self.floor).then(|| {
            ConfigIssue::new(
                source,
                format!("{key_prefix}{}", self.key),
                format!(
                    "{} is very short: {} (the default is {}; under {} is warned about)",
                    humantime_serde::re::humantime::format_duration(value),
                    self.why,
                    humantime_serde::re::humantime::format_duration(default),
                    humantime_serde::re::humantime::format_duration(self.floor),
                ),
            )
        })
    }
}

/// Whether `message` shows nothing on a Minecraft screen: only spaces, line breaks, zero-width characters
/// and `§` formatting codes (`§r`, `§l`), each of which takes the character after it.
fn shows_nothing(message: &str) -> bool {
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        match c {
            '§' => {
                chars.next();
            }
            '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => {}
            c if c.is_whitespace() => {}
            _ => return false,
        }
    }
    true
}

/// A warning when a message players are shown (`key`, `key_prefix` + the file's key) shows nothing (see
/// [`shows_nothing`]): valid, but `who` then reads a disconnect screen (or a server-list entry) with no
/// word on it.
pub(super) fn blank_message(
    source: &str,
    key_prefix: &str,
    key: &str,
    message: &str,
    who: &str,
) -> Option<ConfigIssue> {
    shows_nothing(message).then(|| {
        ConfigIssue::new(
            source,
            format!("{key_prefix}{key}"),
            format!(
                "is blank (or only formatting codes): {who} is shown no reason at all; leave the key \
                 out for the default message"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;
    use crate::config::*;

    #[test]
    fn a_time_limit_under_its_floor_is_a_warning_naming_key_and_value() {
        let with = |timeouts: &str| {
            server(&format!(
                "domains = [\"a.example\"]\naddresses = [\"10.0.0.1:25565\"]\n[timeouts]\n{timeouts}"
            ))
            .unwrap()
            .warnings()
        };
        assert!(with("").is_empty(), "the defaults are not warned about");
        // At each floor: still plausible.
        assert!(with("connect = \"100ms\"\nread = \"20s\"\nwrite = \"5s\"").is_empty());
        // A read limit of exactly the keep-alive interval still cuts a direction that carries only those.
        let warned = with("connect = \"99ms\"\nread = \"15s\"\nwrite = \"4s\"");
        let keys: Vec<&str> = warned.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(
            keys,
            ["timeouts.connect", "timeouts.read", "timeouts.write"]
        );
        assert!(warned.iter().all(|w| w.source == "servers/lobby.toml"));
        assert!(
            warned[1].reason.starts_with("15s is very short")
                && warned[1].reason.contains("keep-alive")
                && warned[1]
                    .reason
                    .ends_with("(the default is 30s; under 20s is warned about)"),
            "{}",
            warned[1]
        );

        let main = |text: &str| {
            MainConfig::from_toml(Path::new("nethergate.toml"), text)
                .unwrap()
                .warnings("nethergate.toml")
        };
        assert!(main("").is_empty() && main("handshake_timeout = \"1s\"").is_empty());
        let warned = main("handshake_timeout = \"1ms\"");
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert_eq!(
            warned[0].to_string().split(" (the default").next(),
            Some(
                "nethergate.toml: `handshake_timeout`: 1ms is very short: a handshake held up by one \
                 lost packet (a resend takes at least 200 ms) or by a slow link arrives after it, and \
                 that player is closed before logging in"
            )
        );

        // `[docker]`'s intervals: "30ms" for "30s" would list the containers 33 times a second.
        assert!(main("[docker]\npoll_interval = \"1s\"\nreconnect_delay = \"100ms\"").is_empty());
        assert!(main("[docker]").is_empty());
        let warned = main("[docker]\npoll_interval = \"30ms\"\nreconnect_delay = \"5ms\"");
        let keys: Vec<&str> = warned.iter().map(|w| w.key.as_str()).collect();
        assert_eq!(
            keys,
            ["docker.poll_interval", "docker.reconnect_delay"],
            "{warned:?}"
        );
        assert!(
            warned[0].reason.starts_with("30ms is very short")
                && warned[0]
                    .reason
                    .ends_with("(the default is 30s; under 1s is warned about)"),
            "{}",
            warned[0]
        );
        assert!(
            warned[1]
                .reason
                .ends_with("(the default is 5s; under 100ms is warned about)"),
            "{}",
            warned[1]
        );
    }
}
