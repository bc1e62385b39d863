//! The server directory: every `*.toml` file in it, each read on its own.

use super::{ConfigErrors, ConfigIssue, ServerConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Whether `path` is a symbolic link whose target cannot be looked at, and why.
fn broken_link(path: &Path) -> Option<std::io::Error> {
    path.is_symlink().then(|| std::fs::metadata(path).err())?
}

/// Whether `path` is a symbolic link whose target does not exist (not merely one that cannot be reached:
/// a permission denied on the way, or a loop of links, is another error).
fn dangling(path: &Path) -> bool {
    broken_link(path).is_some_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// The server files of a directory, each parsed on its own: one broken file does not hide the others.
#[derive(Debug, Default)]
pub struct ServerFiles {
    /// Each `*.toml` file, sorted by path, with its parse result.
    pub files: Vec<(PathBuf, Result<ServerConfig, ConfigErrors>)>,
    /// Per file that failed but is TOML, what it says as far as it could be read (see
    /// [`ServerFiles::claims`]).
    pub partial: BTreeMap<PathBuf, ServerConfig>,
    /// Files that look like another proxy's server files (`*.yaml`, `*.yml`, `*.json`: Infrarust 1,
    /// Infrared), sorted: not read, but warned about, so a server left unconverted does not vanish unsaid.
    pub foreign: Vec<PathBuf>,
    /// Entries named `*.toml` that are no file (a directory, a socket, a FIFO), sorted: not read, but
    /// warned about, as a server file would be expected there.
    pub not_files: Vec<PathBuf>,
}

/// The extensions of other proxies' server files.
const FOREIGN: [&str; 3] = ["yaml", "yml", "json"];

/// What an entry of the server directory is, by its name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryName {
    /// `*.toml` (the extension in any case), not hidden: read as a server file.
    Server,
    /// `*.yaml`, `*.yml` or `*.json`, not hidden: another proxy's server file, warned about.
    Foreign,
    /// Anything else, and every hidden name (an editor's `.lobby.toml.swp`, `.#lobby.toml`): not looked at.
    Other,
}

impl EntryName {
    /// The kind of the entry called `name`.
    pub fn of(name: &std::ffi::OsStr) -> EntryName {
        let name = name.as_encoded_bytes();
        let has = |x: &str| {
            name.len() > x.len() + 1
                && name[name.len() - x.len() - 1] == b'.'
                && name[name.len() - x.len()..].eq_ignore_ascii_case(x.as_bytes())
        };
        if name.starts_with(b".") {
            EntryName::Other
        } else if has("toml") {
            EntryName::Server
        } else if FOREIGN.into_iter().any(has) {
            EntryName::Foreign
        } else {
            EntryName::Other
        }
    }
}

impl ServerFiles {
    /// Reads every `*.toml` file directly in `dir` (sorted by name, so errors are reported in a stable order).
    ///
    /// Hidden files (a name starting with `.`) are not server files: editors keep their lock files and
    /// swap files there (Emacs' `.#lobby.toml` is a link to nowhere while `lobby.toml` is open). Nor is
    /// `main_file`, when `servers_dir` is the main file's own directory.
    ///
    /// A directory that cannot be read is a problem of `main_file`'s `servers_dir` key (of the directory
    /// itself without a main file).
    pub fn read_dir(dir: &Path, main_file: Option<&Path>) -> Result<ServerFiles, ConfigErrors> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            ConfigErrors(vec![ConfigIssue::new(
                &main_file.unwrap_or(dir).display().to_string(),
                "servers_dir",
                format!("cannot read the directory {}: {e}", dir.display()),
            )])
        })?;
        let main_file = main_file.and_then(|m| m.canonicalize().ok());
        let listed = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .map(|p| (p.file_name().map_or(EntryName::Other, EntryName::of), p))
            .filter(|(kind, _)| *kind != EntryName::Other)
            .filter(|(_, p)| main_file.is_none() || p.canonicalize().ok() != main_file);
        let (mut paths, mut foreign, mut not_files) = (Vec::new(), Vec::new(), Vec::new());
        for (kind, p) in listed {
            // A link to nowhere (or to where the proxy may not look) is read too, so that reading it
            // reports why instead of the server quietly vanishing; a directory, socket or FIFO named
            // `*.toml` is not read, but warned about.
            let readable = p.is_file() || broken_link(&p).is_some();
            match (kind == EntryName::Server, readable) {
                (true, true) => paths.push(p),
                (true, false) => not_files.push(p),
                (false, true) => foreign.push(p),
                (false, false) => {} // a directory named `*.json`, say: no server file is expected there
            }
        }
        paths.sort();
        foreign.sort();
        not_files.sort();
        let mut fresh = ServerFiles {
            foreign,
            not_files,
            ..ServerFiles::default()
        };
        for path in paths {
            let result = match read_server(&path) {
                Ok((server, issues)) if issues.is_empty() => Ok(server),
                Ok((server, issues)) => {
                    fresh.partial.insert(path.clone(), server);
                    Err(ConfigErrors(issues))
                }
                Err(unreadable) => Err(unreadable),
            };
            fresh.files.push((path, result));
        }
        Ok(fresh)
    }

    /// What every file claims, in file order: a valid file's server, and what a file with problems says as
    /// far as it could be read (its name, and the domains that are valid). Checked for conflicts (a domain
    /// or a name taken twice) at startup, so that a conflict is reported with the other problems at once
    /// instead of after they are fixed; never routed to.
    pub fn claims(&self) -> Vec<ServerConfig> {
        self.files
            .iter()
            .filter_map(|(path, result)| result.as_ref().ok().or(self.partial.get(path)))
            .cloned()
            .collect()
    }

    /// A warning for each entry of [`ServerFiles::foreign`] and [`ServerFiles::not_files`].
    pub fn warnings(&self) -> Vec<ConfigIssue> {
        let foreign = self.foreign.iter().map(|path| {
            ConfigIssue::new(
                &path.display().to_string(),
                "",
                "not read: server files are `*.toml` (another proxy's server file? write it as a \
                 nethergate server file, see README's Configuration)",
            )
        });
        let not_files = self.not_files.iter().map(|path| {
            let what = match path.is_dir() {
                true => "a directory",
                false => "not a regular file",
            };
            ConfigIssue::new(
                &path.display().to_string(),
                "",
                format!("not read: {what}, not a server file (only files directly in `servers_dir` are read)"),
            )
        });
        foreign.chain(not_files).collect()
    }

    /// Every problem of every file.
    pub fn issues(&self) -> Vec<ConfigIssue> {
        self.files
            .iter()
            .filter_map(|(_, r)| r.as_ref().err())
            .flat_map(|e| e.0.iter().cloned())
            .collect()
    }

    /// The servers that parsed.
    pub fn servers(&self) -> impl Iterator<Item = &ServerConfig> {
        self.files.iter().filter_map(|(_, r)| r.as_ref().ok())
    }
}

/// Reads and parses one server file.
pub fn read_server_file(path: &Path) -> Result<ServerConfig, ConfigErrors> {
    read_server(path).and_then(valid)
}

/// A checked server ([`ServerConfig::check`]) if it has no problems, else its problems.
pub(super) fn valid(
    (server, issues): (ServerConfig, Vec<ConfigIssue>),
) -> Result<ServerConfig, ConfigErrors> {
    match issues.is_empty() {
        true => Ok(server),
        false => Err(ConfigErrors(issues)),
    }
}

/// Reads one server file as [`ServerConfig::check`] parses it; `Err` when it cannot be read or is not TOML.
fn read_server(path: &Path) -> Result<(ServerConfig, Vec<ConfigIssue>), ConfigErrors> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let why = match std::fs::read_link(path) {
            Ok(target) if dangling(path) => format!(
                "cannot read: it is a symbolic link to {}, which does not exist",
                target.display()
            ),
            _ => format!("cannot read: {e}"),
        };
        ConfigErrors(vec![ConfigIssue::new(&source, "", why)])
    })?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    ServerConfig::check(&source, &stem, &text)
}

#[cfg(test)]
mod tests {
    use crate::config::testing::*;

    /// A valid server file.
    const A_SERVER: &str = "domains = [\"a.example.com\"]\naddresses = [\"10.0.0.1:1\"]";

    #[test]
    fn a_server_file_linked_to_nowhere_is_an_error_not_a_missing_server() {
        let path = layout(
            "dangling",
            "",
            &[(
                "a.toml",
                "domains = [\"a.example.com\"]\naddresses = [\"10.0.0.1:1\"]",
            )],
        );
        let servers = path.with_file_name("servers");
        std::os::unix::fs::symlink(servers.join("gone.txt"), servers.join("b.toml")).unwrap();
        // A directory named like a server file is not one.
        std::fs::create_dir(servers.join("c.toml")).unwrap();
        let e = load_once(&path).unwrap_err();
        assert_eq!(
            places(&e),
            vec![("b.toml".to_owned(), String::new())],
            "{e}"
        );
        assert!(e.to_string().contains("symbolic link to"), "{e}");
        assert!(
            e.to_string().contains("gone.txt, which does not exist"),
            "{e}"
        );
        // A loop of links exists, but cannot be read: said as it is, not as a missing target.
        let path = layout("link-loop", "", &[]);
        let servers = path.with_file_name("servers");
        std::os::unix::fs::symlink("b.toml", servers.join("b.toml")).unwrap();
        let e = load_once(&path).unwrap_err();
        assert_eq!(
            places(&e),
            vec![("b.toml".to_owned(), String::new())],
            "{e}"
        );
        assert!(!e.to_string().contains("does not exist"), "{e}");
        assert!(e.to_string().contains("cannot read"), "{e}");
    }

    #[test]
    fn hidden_files_are_not_server_files() {
        let other = "domains = [\"b.example.com\"]\naddresses = [\"10.0.0.1:1\"]";
        let path = layout(
            "hidden",
            "",
            &[
                ("a.toml", A_SERVER),
                (".hidden.toml", ""),
                ("B.TOML", other),
            ],
        );
        let servers = path.with_file_name("servers");
        // Emacs' lock file while a.toml is being edited.
        std::os::unix::fs::symlink("root@host.1234:1700000000", servers.join(".#a.toml")).unwrap();
        let config = load_once(&path).unwrap();
        let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["B", "a"]);
    }

    #[test]
    fn another_proxys_server_files_are_warned_about_not_read() {
        let yaml = "domains:\n  - b.example.com\naddresses:\n  - 10.0.0.1:1\n";
        let path = layout(
            "foreign",
            "",
            &[
                ("a.toml", A_SERVER),
                ("survival.yml", yaml),
                ("lobby.JSON", "{}"),
                ("notes.txt", "x"),
                (".old.yaml", yaml),
            ],
        );
        let config = load_once(&path).unwrap();
        let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["a"]);
        let warned: Vec<String> = config
            .warnings(&path)
            .iter()
            .filter(|w| w.reason.starts_with("not read"))
            .map(|w| w.source.rsplit('/').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(warned, ["lobby.JSON", "survival.yml"]);
    }

    #[test]
    fn an_entry_named_like_a_server_file_that_is_no_file_is_warned_about() {
        let path = layout("not-files", "", &[("a.toml", A_SERVER)]);
        let servers = path.with_file_name("servers");
        std::fs::create_dir(servers.join("x.toml")).unwrap();
        std::fs::create_dir(servers.join("old.json")).unwrap(); // no server file expected: no warning
        let config = load_once(&path).unwrap();
        let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["a"]);
        let warnings = config.warnings(&path);
        let warned: Vec<&crate::ConfigIssue> = warnings
            .iter()
            .filter(|w| w.reason.starts_with("not read"))
            .collect();
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(warned[0].source.ends_with("x.toml"), "{warned:?}");
        assert!(warned[0].reason.contains("a directory"), "{warned:?}");
    }

    #[test]
    fn a_main_file_in_its_own_servers_dir_is_not_a_server_file() {
        let path = layout(
            "same-dir",
            "servers_dir = \".\"\nmax_connections = 5\n",
            &[],
        );
        std::fs::write(path.with_file_name("lobby.toml"), A_SERVER).unwrap();
        let config = load_once(&path).unwrap();
        let names: Vec<&str> = config.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, vec!["lobby"]);
        assert_eq!(config.main.max_connections, 5);
    }
}
