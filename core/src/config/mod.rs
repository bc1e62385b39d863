//! Configuration: the main file and one file per server, as plain data, plus validation that reports every
//! problem at once, each naming the file, the key and the reason.
//!
//! Parsing goes through loosely typed `Raw*` structs (strings for durations and addresses) so that a bad
//! value is reported with its key and a precise reason instead of a generic deserialisation error. Every
//! value in them is a `Field`, and unknown keys are collected rather than refused, so a value of the
//! wrong type or a misspelt key does not stop the checks of the rest of the file: an admin sees every
//! problem of a file in one run. Only a file that is not TOML at all stops at its first syntax error.
//!
//! The files of this module, one concept each: `field` (reading one value, durations), `syntax` (where a
//! TOML error is, and the key it is in), `floor` (time limits short enough to be mistakes), `address`
//! (`host:port`), `domain` (a `domains` entry, internationalised names), `server` (a server file),
//! `main_file` (the main file and `[ip_filter]`), `docker` (the `[docker]` section), `files` (the server
//! directory) and `catalog` (the live servers of every source).

mod address;
mod catalog;
mod docker;
mod domain;
mod field;
mod files;
mod floor;
mod main_file;
mod server;
mod syntax;

pub use address::BackendAddress;
pub use catalog::Catalog;
pub use docker::{DockerConfig, DockerEndpoint, DEFAULT_DOCKER_ENDPOINT, DEFAULT_LABEL_PREFIX};
pub use field::MAX_DURATION;
pub use files::{read_server_file, EntryName, ServerFiles};
pub use main_file::{MainConfig, DEFAULT_IP_FILTER_MESSAGE};
pub use server::{
    ProxyMode, ProxyProtocolVersion, ServerConfig, Timeouts, DEFAULT_DISCONNECT_MESSAGE,
};

use main_file::{read_main_file, CheckedMain};
use std::fmt;
use std::path::Path;

/// One problem found in a configuration source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file (or other source, such as a Docker container) the problem is in.
    pub source: String,
    /// The key, dotted for nested keys (`timeouts.connect`); empty when the whole file is unreadable.
    pub key: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigIssue {
    fn new(source: &str, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigIssue {
            source: source.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Text from a configuration source (a file name, a key, a reason quoting either) as it is written to a
/// terminal or a log: control characters escaped (`\n`, `\u{1b}`), so that whoever can write a server
/// file cannot start a line of their own in the proxy's output or send escape sequences to a terminal.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        // Also the invisible characters that reorder or break lines in a terminal or a log viewer:
        // bidirectional marks and overrides, and the Unicode line and paragraph separators.
        let hidden = |c: char| {
            c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
        };
        while let Some(at) = rest.find(hidden) {
            f.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            write!(f, "{}", c.escape_default())?;
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (source, reason) = (Escaped(&self.source), Escaped(&self.reason));
        if self.key.is_empty() {
            write!(f, "{source}: {reason}")
        } else {
            write!(f, "{source}: `{}`: {reason}", Escaped(&self.key))
        }
    }
}

/// Every problem found, in the order found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{issue}")?;
        }
        Ok(())
    }
}

/// A whole configuration: the main file and its servers, every server valid and the route table buildable.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main file.
    pub main: MainConfig,
    /// The servers, in file order.
    pub servers: Vec<ServerConfig>,
    /// Files of `servers_dir` not read as they look like another proxy's ([`ServerFiles::foreign`]).
    pub foreign: Vec<ConfigIssue>,
}

impl Config {
    /// The warnings of the main file at `main_file` and of every server ([`ServerConfig::warnings`]).
    pub fn warnings(&self, main_file: &Path) -> Vec<ConfigIssue> {
        let mut warnings = self.main.warnings(&main_file.display().to_string());
        warnings.extend(self.foreign.iter().cloned());
        warnings.extend(self.servers.iter().flat_map(ServerConfig::warnings));
        warnings
    }

    /// Loads the main file at `path` and every server file of its `servers_dir`; reports every problem.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = read_main_file(path)?;
        // A main file with wrong values still names a server directory (unless `servers_dir` is the wrong
        // value): its files are checked too, so that every problem is reported at once.
        let CheckedMain {
            main,
            servers_dir_known,
            bind_known,
            mut issues,
        } = MainConfig::check(path, &text)?;
        let mut servers = Vec::new();
        let mut foreign = Vec::new();
        if servers_dir_known {
            match ServerFiles::read_dir(&main.servers_dir, Some(path)) {
                Ok(files) => {
                    issues.extend(files.issues());
                    foreign = files.warnings();
                    servers = files.servers().cloned().collect();
                    // Against a `bind` that is wrong, the default stands in: no loop to report.
                    for server in servers.iter().filter(|_| bind_known) {
                        for address in server.addresses.iter().filter(|a| a.is_bind(main.bind)) {
                            let reason = format!(
                                "{address} is this proxy's own `bind` ({}): every login would dial \
                                 the proxy again, in a loop that ends only when connections or open \
                                 files run out",
                                main.bind
                            );
                            issues.push(ConfigIssue::new(&server.source, "addresses", reason));
                        }
                    }
                    // Conflicts with what a broken file claims too: every problem is reported at once.
                    if let Err(e) = crate::route::RouteTable::build(&files.claims()) {
                        issues.extend(e.0);
                    }
                }
                Err(e) => issues.extend(e.0),
            }
        }
        if !issues.is_empty() {
            return Err(ConfigErrors(issues));
        }
        Ok(Config {
            main,
            servers,
            foreign,
        })
    }
}

#[cfg(test)]
mod testing {
    use super::*;
    use std::path::PathBuf;

    pub(super) fn server(text: &str) -> Result<ServerConfig, ConfigErrors> {
        ServerConfig::from_toml("servers/lobby.toml", "lobby", text)
    }

    pub(super) fn keys(e: ConfigErrors) -> Vec<String> {
        e.0.into_iter().map(|i| i.key).collect()
    }

    /// A main file and its `servers` directory in a fresh temporary directory; the main file's path.
    pub(super) fn layout(name: &str, main: &str, servers: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nethergate-config-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("servers")).unwrap();
        for (file, text) in servers {
            std::fs::write(dir.join("servers").join(file), text).unwrap();
        }
        let path = dir.join("nethergate.toml");
        std::fs::write(&path, main).unwrap();
        path
    }

    /// Loads the layout at `path`, then removes it.
    pub(super) fn load_once(path: &Path) -> Result<Config, ConfigErrors> {
        let loaded = Config::load(path);
        if let Some(dir) = path.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
        loaded
    }

    /// (file name, key) of each problem.
    pub(super) fn places(e: &ConfigErrors) -> Vec<(String, String)> {
        e.0.iter()
            .map(|i| {
                let file = Path::new(&i.source).file_name().unwrap_or_default();
                (file.to_string_lossy().into_owned(), i.key.clone())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;

    #[test]
    fn issues_escape_control_characters_and_nothing_else() {
        use super::{ConfigIssue, Escaped};
        assert_eq!(
            Escaped("plain: caf\u{e9} `x`").to_string(),
            "plain: caf\u{e9} `x`"
        );
        assert_eq!(
            Escaped("a\nb\r\u{1b}[2J\u{7f}\u{85}\tz").to_string(),
            "a\\nb\\r\\u{1b}[2J\\u{7f}\\u{85}\\tz"
        );
        assert_eq!(
            Escaped("a\u{202e}b\u{2028}c\u{200f}").to_string(),
            "a\\u{202e}b\\u{2028}c\\u{200f}"
        );
        let issue = ConfigIssue::new("servers/a\n.toml", "k\ney", "bad\nvalue");
        assert_eq!(
            issue.to_string(),
            "servers/a\\n.toml: `k\\ney`: bad\\nvalue"
        );
    }

    #[test]
    fn a_bad_main_file_does_not_hide_the_server_files_problems() {
        let good = "domains = [\"a.test\"]\naddresses = [\"10.0.0.1:1\"]";
        let clash = "domains = [\"a.test\"]\naddresses = [\"10.0.0.2:1\"]";
        let path = layout(
            "main-and-servers",
            "handshake_timeout = \"abc\"\n",
            &[
                ("a.toml", good),
                ("b.toml", clash),
                ("c.toml", "domains = []\naddresses = [\"10.0.0.3:1\"]"),
            ],
        );
        let e = load_once(&path).unwrap_err();
        let found = places(&e);
        for expected in [
            ("nethergate.toml", "handshake_timeout"),
            ("c.toml", "domains"),
            ("b.toml", "domains"),
        ] {
            let expected = (expected.0.to_owned(), expected.1.to_owned());
            assert!(
                found.contains(&expected),
                "{expected:?} missing in {found:?}"
            );
        }
        assert_eq!(found.len(), 3, "{e}");
        // An unreadable `servers_dir` is reported with the main file's problems.
        let path = layout(
            "main-and-missing-dir",
            "servers_dir = \"nowhere\"\nbind = \"x\"\n",
            &[],
        );
        let e = load_once(&path).unwrap_err();
        let found = places(&e);
        assert_eq!(found.len(), 2, "{e}");
        assert_eq!(found[0], ("nethergate.toml".to_owned(), "bind".to_owned()));
        // It is the main file's key: the problem names the main file, and the reason the directory.
        assert_eq!(
            found[1],
            ("nethergate.toml".to_owned(), "servers_dir".to_owned())
        );
        assert!(
            e.0[1].reason.starts_with("cannot read the directory ")
                && e.0[1].reason.contains("nowhere"),
            "{e}"
        );
        // A bad `servers_dir` names no directory: the server files are not guessed at.
        let path = layout(
            "bad-servers-dir",
            "servers_dir = 5\nhandshake_timeout = \"abc\"\n",
            &[("c.toml", "domains = []")],
        );
        let e = load_once(&path).unwrap_err();
        assert_eq!(
            places(&e),
            vec![
                ("nethergate.toml".to_owned(), "servers_dir".to_owned()),
                ("nethergate.toml".to_owned(), "handshake_timeout".to_owned())
            ],
            "{e}"
        );
        // A good main file with good servers loads.
        let path = layout("all-good", "", &[("a.toml", good)]);
        let config = load_once(&path).unwrap();
        assert_eq!(config.servers.len(), 1);
    }

    #[test]
    fn a_backend_that_is_the_proxy_itself_is_refused() {
        let server = |address: &str| format!("domains = [\"a.test\"]\naddresses = [{address:?}]");
        for (bind, address, refused) in [
            ("0.0.0.0:25565", "127.0.0.1:25565", true),
            ("0.0.0.0:25565", "localhost:25565", true),
            ("0.0.0.0:25565", "LocalHost.:25565", true),
            ("[::]:25565", "[::1]:25565", true),
            ("[::]:25565", "127.0.0.1:25565", true),
            ("192.0.2.7:25565", "192.0.2.7:25565", true),
            ("0.0.0.0:25565", "127.0.0.1:25566", false),
            ("127.0.0.1:25565", "192.0.2.7:25565", false),
            ("0.0.0.0:25565", "backend.example:25565", false),
        ] {
            let main = format!("bind = {bind:?}\n");
            let path = layout("loop", &main, &[("a.toml", &server(address))]);
            let loaded = load_once(&path);
            assert_eq!(loaded.is_err(), refused, "{bind} -> {address}: {loaded:?}");
            if let Err(e) = loaded {
                assert_eq!(places(&e), [("a.toml".to_owned(), "addresses".to_owned())]);
                assert!(e.to_string().contains("this proxy's own `bind`"), "{e}");
            }
        }
        // A `bind` that is wrong is the one error: the default standing in for it is not the proxy's.
        let path = layout(
            "loop-bad-bind",
            "bind = \"0.0.0.0:25577x\"\n",
            &[("a.toml", &server("127.0.0.1:25565"))],
        );
        let e = load_once(&path).unwrap_err();
        assert_eq!(
            places(&e),
            [("nethergate.toml".to_owned(), "bind".to_owned())],
            "{e}"
        );
        // Spaces around it are trimmed, as around every other value.
        let path = layout(
            "bind-spaces",
            "bind = \" 0.0.0.0:25577 \"\n",
            &[("a.toml", &server("127.0.0.1:25565"))],
        );
        assert_eq!(
            load_once(&path).map(|c| c.main.bind.port()).ok(),
            Some(25577)
        );
    }

    #[test]
    fn a_conflict_with_a_broken_file_is_reported_with_its_problems() {
        // README's example: lobby has two problems of its own and claims the domain survival claims too.
        let lobby = "domains = [\"mc.example.com\", \"*..bad\"]\naddresses = [\"10.0.0.1:1\"]\n\
                     network = \"main\"\n[timeouts]\nconnect = \"5 sex\"\n";
        let survival = "domains = [\"MC.example.com\"]\naddresses = [\"10.0.0.2:1\"]";
        let path = layout(
            "broken-and-conflict",
            "",
            &[("lobby.toml", lobby), ("survival.toml", survival)],
        );
        let e = load_once(&path).unwrap_err();
        assert_eq!(
            places(&e),
            [
                ("lobby.toml", "domains"),
                ("lobby.toml", "network"),
                ("lobby.toml", "timeouts.connect"),
                ("survival.toml", "domains"),
            ]
            .map(|(f, k)| (f.to_owned(), k.to_owned())),
            "{e}"
        );
        assert!(e.0[3].reason.contains("claimed by both"), "{e}");
        // A broken file's empty name takes the file's, so it clashes with nothing by that alone.
        let path = layout(
            "broken-names",
            "",
            &[
                ("a.toml", "name = \"\"\ndomains = [\"a.test\"]"),
                ("b.toml", "name = \"\"\ndomains = [\"b.test\"]"),
            ],
        );
        let e = load_once(&path).unwrap_err();
        assert!(!e.to_string().contains("already used"), "{e}");
        assert_eq!(places(&e).len(), 4, "{e}");
    }
}
